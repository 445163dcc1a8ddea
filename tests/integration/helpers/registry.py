"""Launch the real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1.

Modes: "http" (plain), "tls" (self-signed CA, server cert for 127.0.0.1), "htpasswd" (bcrypt
Basic auth, plain HTTP unless tls=True) and "token" (distribution's `auth: token` with our
TokenIssuer). Storage is the filesystem driver in a temp dir so tests can tamper with blobs.
"""
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from .certs import make_ca_and_server_cert
from .token_issuer import TokenIssuer
from .util import free_port, run, wait_http

MODES = ("http", "tls", "htpasswd", "token")
SERVICE = "aishell-test-registry"
ISSUER = "aishell-test-issuer"

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class Registry:
    """A running registry. .host is "127.0.0.1:PORT"; .url its base URL."""

    def __init__(self, mode, workdir, tls=None, acl=None, access_log=False):
        if mode not in MODES:
            raise ValueError(f"unknown registry mode {mode!r}; one of {MODES}")
        self.mode = mode
        self.tls = (mode == "tls") if tls is None else tls
        self.workdir = workdir
        self.access_log = access_log
        self.storage_dir = os.path.join(workdir, "storage")
        os.makedirs(self.storage_dir)
        self.ca_path = None
        self.cert_path = None
        self.username = None
        self.password = None
        # A second identity with every right: tests push restricted repos with it.
        self.admin_username = None
        self.admin_password = None
        self.issuer = None
        self._proc = None
        self._log = None
        self.port = None
        self.host = None
        if self.tls:
            # The CA sits alone in its dir: skopeo's --*-cert-dir reads *.key/*.cert as client certs.
            os.makedirs(os.path.join(workdir, "ca"))
            os.makedirs(os.path.join(workdir, "server"))
            self.ca_path = os.path.join(workdir, "ca", "ca.crt")
            self.cert_path = os.path.join(workdir, "server", "server.crt")
            self.key_path = os.path.join(workdir, "server", "server.key")
            make_ca_and_server_cert(self.ca_path, self.cert_path, self.key_path)
            os.chmod(os.path.join(workdir, "ca"), 0o755)
            os.chmod(self.ca_path, 0o644)
        if mode in ("htpasswd", "token"):
            self.username, self.password = "alice", "alice-s3cret"
            self.admin_username, self.admin_password = "admin", "admin-s3cret"
        if mode == "htpasswd":
            self.htpasswd_path = os.path.join(workdir, "htpasswd")
            lines = [run(["htpasswd", "-Bbn", u, p]).stdout.strip()
                     for u, p in ((self.username, self.password),
                                  (self.admin_username, self.admin_password))]
            with open(self.htpasswd_path, "w") as f:
                f.write("\n".join(lines) + "\n")
        if mode == "token":
            # Default policy: alice may pull and push anything except restricted/*.
            self.acl = acl or {
                self.username: [("restricted/*", set()), ("*", {"pull", "push"})],
                self.admin_username: [("*", {"pull", "push", "delete"})],
            }
            self.issuer = TokenIssuer(os.path.join(workdir, "token-signing.crt"), SERVICE, ISSUER,
                                      {self.username: self.password,
                                       self.admin_username: self.admin_password}, self.acl)
        self._start()

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        return f"{self.scheme}://{self.host}"

    def _config(self):
        cfg = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": not self.access_log}},
            "storage": {"filesystem": {"rootdirectory": self.storage_dir},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "aishell-integration-tests",
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if self.tls:
            cfg["http"]["tls"] = {"certificate": self.cert_path, "key": self.key_path}
        if self.mode == "htpasswd":
            cfg["auth"] = {"htpasswd": {"realm": "aishell-test", "path": self.htpasswd_path}}
        if self.mode == "token":
            cfg["auth"] = {"token": {"realm": self.issuer.realm, "service": SERVICE,
                                     "issuer": ISSUER,
                                     "rootcertbundle": self.issuer.cert_path}}
        return cfg

    def _start(self):
        last_error = None
        for _ in range(5):  # retry: the free port may be taken between probe and bind
            self.port = free_port()
            self.host = f"127.0.0.1:{self.port}"
            cfg_path = os.path.join(self.workdir, "config.yml")
            with open(cfg_path, "w") as f:
                json.dump(self._config(), f, indent=1)  # JSON is YAML
            log_path = os.path.join(self.workdir, "registry.log")
            self._log = open(log_path, "ab")
            self._proc = subprocess.Popen(["docker-registry", "serve", cfg_path],
                                          stdout=self._log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
            try:
                wait_http(f"{self.url}/v2/", ca_path=self.ca_path, proc=self._proc,
                          log_path=log_path)
                return
            except RuntimeError as e:
                last_error = e
                self._kill()
        raise RuntimeError(f"could not start docker-registry: {last_error}")

    def _kill(self):
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def stop(self):
        self._kill()
        if self.issuer:
            self.issuer.stop()
            self.issuer = None

    def log(self):
        with open(os.path.join(self.workdir, "registry.log"), errors="replace") as f:
            return f.read()

    def requests(self):
        """(method, path, status) of every request so far, from the access log (the registry
        writes one combined-log line per request to stdout, i.e. registry.log, once it has
        answered; start it with access_log=True)."""
        if not self.access_log:
            raise RuntimeError("start the registry with access_log=True to read its requests")
        return [(m.group(1), m.group(2), int(m.group(3)))
                for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ', self.log())]

    # --- what skopeo needs --------------------------------------------------------------------
    def skopeo_dest_args(self, admin=False):
        args = []
        if self.tls:
            args += [f"--dest-cert-dir={os.path.dirname(self.ca_path)}"]
        else:
            args += ["--dest-tls-verify=false"]
        creds = self.credentials(admin)
        if creds:
            args += [f"--dest-creds={creds[0]}:{creds[1]}"]
        return args

    def skopeo_src_args(self, admin=False):
        args = []
        if self.tls:
            args += [f"--src-cert-dir={os.path.dirname(self.ca_path)}"]
        else:
            args += ["--src-tls-verify=false"]
        creds = self.credentials(admin)
        if creds:
            args += [f"--src-creds={creds[0]}:{creds[1]}"]
        return args

    def credentials(self, admin=False):
        if self.username is None:
            return None
        return (self.admin_username, self.admin_password) if admin else (self.username,
                                                                         self.password)

    # --- direct HTTP access (for assertions; independent of aishell) ---------------------------
    def _ssl_context(self):
        return ssl.create_default_context(cafile=self.ca_path) if self.tls else None

    def _auth_header(self, repo, actions, admin):
        creds = self.credentials(admin)
        if self.mode == "htpasswd":
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if self.mode == "token":
            q = urllib.parse.urlencode({"service": SERVICE,
                                        "scope": f"repository:{repo}:{actions}"})
            req = urllib.request.Request(f"{self.issuer.realm}?{q}")
            basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            req.add_header("Authorization", "Basic " + basic)
            with urllib.request.urlopen(req, timeout=10) as r:
                return "Bearer " + json.load(r)["token"]
        return None

    def request(self, method, path, repo=None, headers=None, admin=True, actions="pull"):
        """One HTTP request to the registry, authorized as admin by default.

        Returns (status, headers, body bytes); HTTP errors are returned, not raised.
        """
        req = urllib.request.Request(self.url + path, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if repo is not None and self.mode in ("htpasswd", "token"):
            req.add_header("Authorization", self._auth_header(repo, actions, admin))
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl_context()) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_manifest(self, repo, reference):
        """(raw bytes, Docker-Content-Digest, Content-Type) of a manifest as the registry serves it."""
        status, headers, body = self.request("GET", f"/v2/{repo}/manifests/{reference}", repo=repo,
                                             headers={"Accept": MANIFEST_ACCEPT})
        if status != 200:
            raise RuntimeError(f"GET manifest {repo}:{reference}: HTTP {status}: {body[:300]!r}")
        return body, headers.get("Docker-Content-Digest"), headers.get("Content-Type")

    def blob_data_path(self, digest):
        """The file the filesystem driver keeps a blob's bytes in (to tamper with it)."""
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.storage_dir, "docker", "registry", "v2", "blobs", algo, hexd[:2],
                            hexd, "data")


def start_registry(mode="http", base_dir=None, tls=None, acl=None, access_log=False):
    workdir = tempfile.mkdtemp(prefix=f"registry-{mode}-", dir=base_dir)
    os.chmod(workdir, 0o755)  # the CA must be readable by the unprivileged user
    try:
        return Registry(mode, workdir, tls=tls, acl=acl, access_log=access_log)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")
