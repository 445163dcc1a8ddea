#!/usr/bin/python3
"""The differential suite: build each case with aishell and compare the image with Docker's.

    tests/conformance/run.py                  aishell vs the committed goldens (no dockerd)
    tests/conformance/run.py CASE...          only these cases (names or cases/NAME paths)
    tests/conformance/run.py --refresh CASE   rebuild these cases' goldens with dockerd
    tests/conformance/run.py --refresh        ... every case's
    tests/conformance/run.py --docker         slow mode: build every case with dockerd now and
                                              compare aishell with that (and the goldens with it)
    tests/conformance/run.py --mode single    aishell's userns mode (subuid, single or both)

Runs as root: aishell runs as the unprivileged test user (setpriv, as tests/integration does),
dockerd as root. README.md here says what a case is; intentional-differences.md lists where
aishell follows BuildKit instead of the classic builder of Docker 20.10.
"""
import argparse
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CASES_DIR = os.path.join(HERE, "cases")
DIFFERENCES_MD = os.path.join(HERE, "intentional-differences.md")
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "integration"))

from helpers import dockerd as helper_dockerd  # noqa: E402
from helpers import users  # noqa: E402
from helpers.dockerd import unmount_below  # noqa: E402
from helpers.images import push as push_image  # noqa: E402
from helpers.registry import start_registry  # noqa: E402
from helpers.runtime_images import Layer  # noqa: E402

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/bin/busybox"
# The image config fields compared (everything else is when, by whom, or Docker's own).
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild")
# Files of a case directory that are not the build's input.
CASE_FILES = {"Dockerfile", "context", "setup.sh", "args", "expect-failure", "golden.json",
              "golden-by-hand", "differences.json", "single-mode"}


class CaseError(Exception):
    pass


# --- the base image ---------------------------------------------------------------------------
def base_layer():
    """The one layer of the base image every case's `FROM busybox` names: busybox-static with
    every applet, /etc/passwd and /etc/group with a user `app` (1000:1000), /root, /tmp."""
    layer = Layer()
    layer.host_file("bin/busybox", BUSYBOX, 0o755)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
               "app:x:1000:1000:app:/home/app:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", "root:x:0:\ntty:x:5:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n")
    layer.dir("home/app", 0o755, 1000, 1000)
    layer.dir("root", 0o700)
    layer.dir("tmp", 0o1777)
    return layer.finish()


def write_base_layout(layout, layer_tar):
    """An OCI layout holding the base image as `busybox` (gzip layer, Env PATH, Cmd sh)."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"))

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    gz = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    config = {"architecture": "amd64" if os.uname().machine == "x86_64" else os.uname().machine,
              "os": "linux", "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
              "rootfs": {"type": "layers",
                         "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **blob(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **blob(gz)}]}
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         **blob(json.dumps(manifest).encode()),
         "annotations": {"org.opencontainers.image.ref.name": "busybox"}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


# --- file trees -------------------------------------------------------------------------------
def clean_path(name):
    """A layer member's name as an absolute path ("./a/b/", "a/b" and "/a/b" are all /a/b)."""
    return os.path.normpath("/" + name).replace("//", "/", 1)


class Tree:
    """A root file system as layers stack up: {"/path": entry dict}. Whiteouts and opaque
    markers are applied as the OCI image spec (layer.md) and Docker's overlay differ say."""

    def __init__(self):
        self.entries = {}

    def _remove_under(self, path, keep_self=False):
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.entries if p.startswith(prefix) or (p == path and not keep_self)]:
            del self.entries[p]

    def apply(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            opaque, layer = [], []
            for m in tar:
                path = clean_path(m.name)
                base, parent = os.path.basename(path), os.path.dirname(path)
                if base == ".wh..wh..opq":
                    opaque.append(parent)
                    continue
                if base.startswith(".wh."):
                    self._remove_under(os.path.join(parent, base[4:]))
                    continue
                layer.append((path, self._entry(m, tar)))
            # Opaque markers hide the lower layers' content of their directory only, whatever
            # the order in the tar.
            for d in opaque:
                self._remove_under(d, keep_self=True)
            for path, entry in layer:
                old = self.entries.get(path)
                if entry["type"] != "dir" or (old and old["type"] != "dir"):
                    self._remove_under(path, keep_self=True)
                if entry["type"] == "hardlink":
                    target = self.entries.get(entry["target"])
                    if target is None:
                        raise CaseError(f"layer hard link {path} -> {entry['target']}: no such entry")
                    entry = dict(target, hardlink_to=entry["target"])
                self.entries[path] = entry

    @staticmethod
    def _entry(m, tar):
        e = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
        if m.isdir():
            e["type"] = "dir"
        elif m.issym():
            e["type"] = "symlink"
            e["target"] = m.linkname
            del e["mode"]  # a symlink's mode means nothing on Linux
        elif m.islnk():
            e["type"] = "hardlink"
            e["target"] = clean_path(m.linkname)
        elif m.isreg():
            e["type"] = "file"
            h = hashlib.sha256()
            f = tar.extractfile(m)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            e["size"] = m.size
            e["sha256"] = h.hexdigest()
        elif m.ischr() or m.isblk():
            e["type"] = "char" if m.ischr() else "block"
            e["dev"] = f"{m.devmajor},{m.devminor}"
        elif m.isfifo():
            e["type"] = "fifo"
        else:
            raise CaseError(f"layer entry {m.name}: tar type {m.type!r}")
        xattrs = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items()
                  if k.startswith("SCHILY.xattr.")}
        if xattrs:
            e["xattrs"] = xattrs
        return e

    def describe(self):
        """{path: one line}: hard links are the file plus `links=` the smallest path of their
        group, so either tool may pick which name the data goes under."""
        groups = {}
        for path, e in self.entries.items():
            if "hardlink_to" in e:
                root = e["hardlink_to"]
                groups.setdefault(root, {root}).add(path)
        leader = {}
        for members in groups.values():
            first = min(members)
            for p in members:
                leader[p] = first
        out = {}
        for path, e in self.entries.items():
            if path == "/":
                continue
            out[path] = describe_entry(e, leader.get(path))
        return out


def describe_entry(e, link_group=None):
    owner = f"{e['uid']}:{e['gid']}"
    t = e["type"]
    if t == "symlink":
        text = f"symlink {owner} -> {e['target']}"
    elif t == "file":
        text = f"file {e['mode']:04o} {owner} size={e['size']} sha256={e['sha256'][:16]}"
        if link_group:
            text += f" links={link_group}"
    elif t in ("char", "block"):
        text = f"{t} {e['mode']:04o} {owner} {e['dev']}"
    else:
        text = f"{t} {e['mode']:04o} {owner}"
    if e.get("xattrs"):
        text += " xattrs=" + ",".join(sorted(e["xattrs"]))
    return text


def tree_delta(base, final):
    """What the build changed: {path: description} for entries added or changed, and
    {path: "removed"} for base entries gone."""
    delta = {p: d for p, d in final.items() if base.get(p) != d}
    delta.update({p: "removed" for p in base if p not in final})
    return dict(sorted(delta.items()))


def normalize_config(cfg):
    """The compared config fields; empty and absent are the same (Docker writes null)."""
    out = {}
    for key in CONFIG_KEYS:
        value = cfg.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "Healthcheck":
            value = {k: v for k, v in value.items() if v not in (None, 0, "", [])}
        out[key] = value
    return out


# --- running things ---------------------------------------------------------------------------
def run(cmd, check=True, timeout=600, **kw):
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise CaseError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                        f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


class Case:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.dockerfile = os.path.join(path, "Dockerfile")
        if not os.path.isfile(self.dockerfile):
            raise CaseError(f"case {self.name}: no Dockerfile")
        unknown = set(os.listdir(path)) - CASE_FILES
        if unknown:
            raise CaseError(f"case {self.name}: unknown files {sorted(unknown)} (the context "
                            f"goes in context/; README.md lists a case's files)")
        self.expect_failure = os.path.exists(os.path.join(path, "expect-failure"))
        self.by_hand = os.path.exists(os.path.join(path, "golden-by-hand"))
        self.single_mode = os.path.exists(os.path.join(path, "single-mode"))
        self.args = []
        args_path = os.path.join(path, "args")
        if os.path.exists(args_path):
            with open(args_path) as f:
                self.args = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        self.golden_path = os.path.join(path, "golden.json")

    def golden(self):
        if not os.path.exists(self.golden_path):
            raise CaseError(f"case {self.name}: no golden.json; make it with --refresh {self.name}")
        with open(self.golden_path) as f:
            return json.load(f)

    def differences(self, known):
        path = os.path.join(self.path, "differences.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            diffs = json.load(f)
        for name in diffs:
            if name not in known:
                raise CaseError(f"case {self.name}: difference {name!r} is not a heading of "
                                f"intentional-differences.md")
        return diffs

    def prepare(self, workdir, owner):
        """The build's context in workdir/ctx: the case's context/ (modes normalized, as git
        does not keep them) and its Dockerfile, owned by `owner` (the user aishell runs as),
        then setup.sh. Both builders read the same Dockerfile: `FROM busybox` is the base
        image (docker: imported under that name; aishell: pulled through a registry mirror)."""
        ctx = os.path.join(workdir, "ctx")
        src = os.path.join(self.path, "context")
        if os.path.isdir(src):
            shutil.copytree(src, ctx, symlinks=True)
        else:
            os.makedirs(ctx)
        for root, dirs, files in os.walk(ctx):
            os.chmod(root, 0o755)
            for name in files:
                p = os.path.join(root, name)
                if not os.path.islink(p):
                    os.chmod(p, 0o755 if os.stat(p).st_mode & 0o100 else 0o644)
        if os.path.lexists(os.path.join(ctx, "Dockerfile")):
            raise CaseError(f"case {self.name}: context/Dockerfile: the case's Dockerfile is "
                            f"the one at its top")
        shutil.copyfile(self.dockerfile, os.path.join(ctx, "Dockerfile"))
        os.chmod(os.path.join(ctx, "Dockerfile"), 0o644)
        for root, dirs, files in os.walk(workdir):
            os.lchown(root, owner.pw_uid, owner.pw_gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)
        # After the chown, which clears setuid bits; as that user, so what it makes is theirs.
        setup = os.path.join(self.path, "setup.sh")
        if os.path.exists(setup):
            with open(setup, "rb") as f:  # on stdin: the user may not read the checkout
                script = f.read()
            run(users.as_user_prefix(owner) + ["sh", "-eus"], cwd=ctx, input=script,
                env={"PATH": BASE_PATH, "LC_ALL": "C.UTF-8"})
        return ctx


def load_known_differences():
    names = set()
    with open(DIFFERENCES_MD) as f:
        for line in f:
            m = re.match(r"^## `([a-z0-9-]+)`", line)
            if m:
                names.add(m.group(1))
    return names


def apply_differences(golden, diffs):
    """The Docker golden patched with the case's intentional differences: "result" ("failed"
    when BuildKit refuses the build), config keys and tree paths replaced (null deletes). A
    patch that changes nothing is an error: the difference would no longer exist and its entry
    must go."""
    expected = json.loads(json.dumps(golden))
    for name, patch in diffs.items():
        if "result" in patch:  # BuildKit refuses (or builds) what the classic builder does not
            if patch["result"] == expected["result"]:
                raise CaseError(f"intentional difference {name!r}: Docker's result is already "
                                f"{patch['result']!r}")
            if patch["result"] == "failed":
                expected = {"result": "failed"}
                continue
            # Built where Docker failed: the patch gives the whole result.
            expected = {"result": "built", "config": {}, "tree": {}}
        for section in ("config", "tree"):
            for key, value in patch.get(section, {}).items():
                target = expected.setdefault(section, {})
                if target.get(key) == value:
                    raise CaseError(f"intentional difference {name!r}: {section} {key} is "
                                    f"already {value!r} in Docker's result")
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
    return expected


# --- Docker -----------------------------------------------------------------------------------
class Dockerd(helper_dockerd.Dockerd):
    """The shared private dockerd (tests/integration/helpers/dockerd.py) with the case steps."""

    def __init__(self, workdir):
        try:
            super().__init__(workdir)
        except helper_dockerd.DockerdError as e:
            raise CaseError(str(e)) from e

    def docker(self, *args, check=True, **kw):
        try:
            return super().docker(*args, check=check, text=False, **kw)
        except helper_dockerd.DockerdError as e:
            raise CaseError(str(e)) from e

    def import_base(self, layer_path):
        self.docker("import", "--change", f"ENV {PATH_ENV}", "--change", 'CMD ["sh"]',
                    layer_path, "busybox:latest")

    def build(self, case, workdir, tag):
        ctx = case.prepare(workdir, users.check_unpriv_user())
        proc = self.docker("build", "--network", "none", "--force-rm", "-q", "-t", tag,
                           *case.args, ctx, check=False, timeout=300)
        if proc.returncode != 0:
            return {"result": "failed", "error": proc.stderr.decode(errors="replace").strip()}
        saved = os.path.join(workdir, "image.tar")
        self.docker("save", "-o", saved, tag)
        with tarfile.open(saved) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))[0]
            config = json.load(tar.extractfile(manifest["Config"]))
            tree = Tree()
            for layer in manifest["Layers"]:
                tree.apply(tar.extractfile(layer))
        self.docker("rmi", tag, check=False)
        return {"result": "built", "config": normalize_config(config.get("config") or {}),
                "tree": tree.describe()}


# --- aishell ----------------------------------------------------------------------------------
class Aishell:
    """aishell run as the unprivileged user, every case built in one store."""

    def __init__(self, binary, workdir, mode, mirror):
        self.binary = binary
        self.mirror = mirror
        self.mode = mode
        self.entry = users.check_unpriv_user()
        self.workdir = workdir
        own = os.path.join(workdir, f"aishell-{mode}")
        self.store = os.path.join(own, "store")
        self.home = os.path.join(own, "home")
        os.makedirs(self.home)
        for d in (own, self.home):
            os.lchown(d, self.entry.pw_uid, self.entry.pw_gid)

    def __call__(self, *args, check=True, timeout=300):
        env = {"PATH": BASE_PATH, "HOME": self.home, "USER": self.entry.pw_name,
               "LOGNAME": self.entry.pw_name, "LANG": "C.UTF-8", "AISHELL_STORE": self.store,
               "AISHELL_USERNS": self.mode, "AISHELL_REGISTRY_MIRROR": self.mirror}
        for key in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if key in os.environ:
                env[key] = os.environ[key]
        cmd = users.as_user_prefix(self.entry) + [self.binary, *args]
        return run(cmd, check=check, timeout=timeout, env=env, cwd=self.home)

    def build(self, case, workdir, tag):
        ctx = case.prepare(workdir, self.entry)
        proc = self("build", "-q", "-t", tag, *case.args, ctx, check=False)
        if proc.returncode != 0:
            return {"result": "failed", "error": proc.stderr.decode(errors="replace").strip()}
        return self.read_image(tag)

    def read_image(self, name):
        oci = os.path.join(self.store, "oci")
        with open(os.path.join(oci, "index.json")) as f:
            index = json.load(f)
        digest = next((m["digest"] for m in index["manifests"]
                       if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name),
                      None)
        if digest is None:
            raise CaseError(f"image {name} not in {oci}/index.json after its build")
        manifest = json.loads(self._blob(digest))
        config = json.loads(self._blob(manifest["config"]["digest"]))
        tree = Tree()
        for desc in manifest["layers"]:
            data = self._blob(desc["digest"])
            if desc["mediaType"].endswith("+zstd"):
                data = run(["zstd", "-dc"], input=data).stdout
            tree.apply(io.BytesIO(data))
        return {"result": "built", "config": normalize_config(config.get("config") or {}),
                "tree": tree.describe()}

    def _blob(self, digest):
        algo, hexd = digest.split(":", 1)
        with open(os.path.join(self.store, "oci", "blobs", algo, hexd), "rb") as f:
            return f.read()


# --- comparing --------------------------------------------------------------------------------
def compare(expected, got, limit=25):
    """Human-readable differences between two results; [] when they match."""
    if expected["result"] != got["result"]:
        why = got.get("error", "").splitlines()[-1:] if got["result"] == "failed" else []
        return [f"Docker {expected['result']}, aishell {got['result']}"
                + (f": {why[0]}" if why else "")]
    if expected["result"] == "failed":
        return []
    out = []
    for key in sorted(set(expected["config"]) | set(got["config"])):
        e, g = expected["config"].get(key), got["config"].get(key)
        if e != g:
            out.append(f"config {key}: Docker {json.dumps(e)}, aishell {json.dumps(g)}")
    et, gt = expected["tree"], got["tree"]
    for path in sorted(set(et) | set(gt)):
        e, g = et.get(path, "(base)"), gt.get(path, "(base)")
        if e != g:
            out.append(f"{path}: Docker {e}; aishell {g}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def same_result(a, b):
    """Equal but for Docker's error text (kept for the reader, not compared)."""
    return {k: v for k, v in a.items() if k != "error"} == {k: v for k, v in b.items() if k != "error"}


def golden_of(result, base_tree):
    if result["result"] == "failed":
        # Kept for whoever reads the golden, not compared (aishell words its errors its own way).
        return {"result": "failed", "error": result["error"].splitlines()[-1] if result["error"] else ""}
    return {"result": "built", "config": result["config"],
            "tree": tree_delta(base_tree, result["tree"])}


def write_golden(case, golden):
    with open(case.golden_path, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def find_cases(names):
    all_cases = sorted(os.listdir(CASES_DIR))
    if not names:
        return [Case(os.path.join(CASES_DIR, n)) for n in all_cases]
    out = []
    for n in names:
        n = os.path.basename(n.rstrip("/"))
        if n not in all_cases:
            raise CaseError(f"no case {n!r} in {CASES_DIR}")
        out.append(Case(os.path.join(CASES_DIR, n)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--refresh", action="store_true",
                    help="rebuild the goldens of the cases with dockerd (no aishell)")
    ap.add_argument("--docker", action="store_true",
                    help="slow mode: compare aishell with dockerd's results built now")
    ap.add_argument("--mode", choices=("subuid", "single", "both"), default="subuid",
                    help="aishell's user namespace mode (default subuid, plus single for the "
                    "cases with a single-mode file)")
    ap.add_argument("--binary", default=os.environ.get("AISHELL_BIN") or
                    os.path.join(REPO_ROOT, "build", "src", "cli", "aishell"))
    ap.add_argument("-j", "--jobs", type=int, default=1,
                    help="cases built at once (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("tests/conformance/run.py runs as root (aishell runs as the unprivileged "
                 "user, dockerd as root); use sudo or scripts/test")
    start = time.monotonic()
    cases = find_cases(opts.cases)
    known = load_known_differences()
    workdir = tempfile.mkdtemp(prefix="aishell-conformance-", dir="/tmp")
    os.chmod(workdir, 0o755)
    layer_tar = base_layer()
    base_tree = Tree()
    base_tree.apply(io.BytesIO(layer_tar))
    base = base_tree.describe()
    dockerd = registry = None
    try:
        docker_results, refused = {}, set()
        if opts.refresh or opts.docker:
            layer_path = os.path.join(workdir, "base.tar")
            with open(layer_path, "wb") as f:
                f.write(layer_tar)
            dockerd = Dockerd(workdir)
            dockerd.import_base(layer_path)
            for case in cases:
                if case.by_hand:
                    continue
                d = os.path.join(workdir, "docker-" + case.name)
                os.makedirs(d)
                docker_results[case.name] = golden_of(
                    dockerd.build(case, d, f"conformance/{case.name.lower()}"), base)
                failed = docker_results[case.name]["result"] == "failed"
                if failed != case.expect_failure:
                    # Not written: either the case or the daemon is wrong; a person decides.
                    print(f"ERROR {case.name}: Docker {'failed' if failed else 'built'} but the "
                          f"case {'does not have' if failed else 'has'} expect-failure"
                          + (f": {docker_results[case.name]['error']}" if failed else ""),
                          file=sys.stderr)
                    refused.add(case.name)
            dockerd.stop()
            dockerd = None
        if opts.refresh:
            for case in cases:
                if case.name in docker_results and case.name not in refused:
                    write_golden(case, docker_results[case.name])
                    print(f"wrote {os.path.relpath(case.golden_path, REPO_ROOT)}")
            return 1 if refused else 0

        layout = os.path.join(workdir, "base-layout")
        write_base_layout(layout, layer_tar)
        registry = start_registry("http", base_dir=workdir)
        # As Docker Hub's library/busybox, so that `FROM busybox` reaches it through the
        # mirror setting and the Dockerfile is the same bytes for both builders.
        push_image(f"oci:{layout}:busybox", registry, "library/busybox:latest")
        if opts.mode == "both":
            runs = [("subuid", cases), ("single", cases)]
        elif opts.mode == "subuid":
            # Cases marked single-mode (owners matter) run in single mode as well.
            runs = [("subuid", cases), ("single", [c for c in cases if c.single_mode])]
        else:
            runs = [("single", cases)]
        failures, total = 0, 0
        for mode, mode_cases in runs:
            if not mode_cases:
                continue
            ai = Aishell(opts.binary, workdir, mode, registry.url)
            ai("pull", "busybox")

            def one(case):
                d = os.path.join(workdir, f"{mode}-{case.name}")
                os.makedirs(d)
                expected = docker_results.get(case.name) or case.golden()
                problems = []
                if case.expect_failure != (expected["result"] == "failed"):
                    problems.append(f"expect-failure marker and golden disagree "
                                    f"(golden: {expected['result']})")
                if opts.docker and not case.by_hand and not same_result(case.golden(), expected):
                    problems.append("golden.json is stale: Docker's result now differs "
                                    f"(--refresh {case.name})")
                expected = apply_differences(expected, case.differences(known))
                got = golden_of(ai.build(case, d, f"conformance/{case.name.lower()}"),
                                base)
                return problems + compare(expected, got)

            with concurrent.futures.ThreadPoolExecutor(max(1, opts.jobs)) as pool:
                futures = {case.name: pool.submit(one, case) for case in mode_cases}
                for name, fut in futures.items():
                    total += 1
                    try:
                        problems = fut.result()
                    except (CaseError, OSError, ValueError, subprocess.SubprocessError) as e:
                        problems = [f"{type(e).__name__}: {e}"]
                    if problems:
                        failures += 1
                        print(f"FAIL  {name} ({mode})")
                        for p in problems:
                            print("        " + p.replace("\n", "\n        "))
                    else:
                        print(f"ok    {name} ({mode})")
        secs = time.monotonic() - start
        print(f"\n{total - failures}/{total} cases match Docker ({secs:.0f}s)")
        return 1 if failures else 0
    finally:
        if dockerd:
            dockerd.stop()
        if registry:
            registry.stop()
        if opts.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        elif unmount_below(workdir):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CaseError as e:
        sys.exit(f"conformance: error: {e}")
