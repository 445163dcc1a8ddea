"""Fixtures shared by every integration test (see README.md here for how to use them).

  aishell        runner: aishell(*args, user="root"|"unpriv", env={}, input=None, check=True,
                 timeout=120) -> CompletedProcess (text); .popen(...) for signal tests; .store and
                 .home are this test's store (AISHELL_STORE) and HOME, usable by both users
  unpriv_user    name of the unprivileged user (created by scripts/test); fails if missing
  registry       factory: registry(mode="http"|"tls"|"htpasswd"|"token", tls=None, acl=None)
                 -> a running docker-registry (.host, .url, .ca_path, .username, .password,
                 .storage_dir, .stop(), ...); stopped at teardown
  rt_images      the runtime test images of helpers/runtime_images.py (session-wide, cached)
  busybox        rt-busybox pulled into the test's store (by the unprivileged user); its name
  images         fixture images built by umoci/skopeo (session-wide, cached on disk);
                 images.push(ref, registry, "repo:tag")
  push           the same push as a plain function
  fixtures_dir   tests/fixtures, or its world-readable installed copy ($AISHELL_FIXTURES_DIR)
  fault_proxy    factory: fault_proxy(upstream_host) -> FaultProxy in front of a plain-HTTP registry
  fake_registry  factory: fake_registry() -> FakeRegistry serving canned responses
  dockerd        a private dockerd (root, vfs, no network) for the session: .docker(*args)

Tests run as root (pytest itself) and switch to the unprivileged user per command with setpriv.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import users  # noqa: E402
from helpers.dockerd import Dockerd  # noqa: E402
from helpers.fake_registry import FakeRegistry  # noqa: E402
from helpers.fault_proxy import FaultProxy  # noqa: E402
from helpers.images import ensure_images, push as push_image  # noqa: E402
from helpers.registry import start_registry  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Sanitizer settings pass through, so the CI sanitizer run reports from every aishell process.
PASSTHROUGH_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TERM")


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("the integration tests run as root (they switch to the "
                                "unprivileged user per command); use scripts/test or sudo")


def aishell_binary():
    return os.environ.get("AISHELL_BIN") or os.path.join(REPO_ROOT, "build", "src", "cli", "aishell")


@pytest.fixture(scope="session")
def session_dir():
    """/tmp/aishell-it-XXXX: world-traversable, so the unprivileged user can reach its dirs."""
    path = tempfile.mkdtemp(prefix="aishell-it-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    if os.environ.get("AISHELL_KEEP_TMP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures_dir():
    """tests/fixtures, or its installed copy ($AISHELL_FIXTURES_DIR, readable by every user)."""
    return os.environ.get("AISHELL_FIXTURES_DIR") or os.path.join(REPO_ROOT, "tests", "fixtures")


def _sanitizer_reports(log_dir):
    try:
        return {os.path.join(log_dir, n) for n in os.listdir(log_dir)}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def _sanitizer_check():
    """Under the ASan+UBSan build, any report written during a test fails that test.

    scripts/test points ASAN_OPTIONS/UBSAN_OPTIONS log_path into $AISHELL_SANITIZER_LOG_DIR:
    a report must not hide behind a command that is expected to fail anyway."""
    log_dir = os.environ.get("AISHELL_SANITIZER_LOG_DIR")
    if not log_dir:
        yield
        return
    before = _sanitizer_reports(log_dir)
    yield
    new = sorted(_sanitizer_reports(log_dir) - before)
    if new:
        texts = []
        for path in new:
            with open(path, errors="replace") as f:
                texts.append(f"--- {path} ---\n{f.read()[-6000:]}")
        pytest.fail("sanitizer reports during this test:\n" + "\n".join(texts), pytrace=False)


@pytest.fixture(scope="session")
def unpriv_user():
    try:
        users.check_unpriv_user()
    except users.UserError as e:
        pytest.fail(str(e), pytrace=False)
    return users.UNPRIV_USER


@pytest.fixture(scope="session")
def _binary_checked(unpriv_user):
    binary = aishell_binary()
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        pytest.fail(f"aishell binary {binary} not found; build it (cmake + ninja) or set "
                    f"AISHELL_BIN", pytrace=False)
    entry = users.check_unpriv_user(unpriv_user)
    return binary, users.user_can_execute(entry, binary)


class AishellRunner:
    """Runs the aishell binary for one test, with that test's store and home."""

    def __init__(self, binary, unpriv_ok, workdir, entry):
        self.binary = binary
        self._unpriv_ok = unpriv_ok
        self.workdir = workdir
        self.entry = entry
        self.store = os.path.join(workdir, "store")
        self.home = os.path.join(workdir, "home")
        os.makedirs(self.home)
        # Both dirs belong to the unprivileged user: root can use them too, and a test may run
        # aishell as either user (one user per store, in practice).
        users.chown_tree(workdir, entry)
        os.chmod(workdir, 0o755)
        os.chmod(self.home, 0o755)

    # --- environment -------------------------------------------------------------------------
    def env_for(self, user, env=None):
        name = "root" if user == "root" else self.entry.pw_name
        result = {"PATH": BASE_PATH, "HOME": self.home, "USER": name, "LOGNAME": name,
                  "LANG": "C.UTF-8", "AISHELL_STORE": self.store}
        for key in PASSTHROUGH_ENV:
            if key in os.environ:
                result[key] = os.environ[key]
        for key, value in (env or {}).items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = str(value)
        return result

    def command(self, args, user):
        if user == "root":
            return [self.binary, *map(str, args)]
        if user != "unpriv":
            raise ValueError(f"user must be 'root' or 'unpriv', not {user!r}")
        if not self._unpriv_ok:
            pytest.fail(f"the unprivileged user cannot execute {self.binary}; install it where "
                        f"that user can read it (scripts/test copies it to /opt/aishell-ci) "
                        f"and set AISHELL_BIN", pytrace=False)
        return users.as_user_prefix(self.entry) + [self.binary, *map(str, args)]

    # --- running -----------------------------------------------------------------------------
    def __call__(self, *args, user="root", env=None, input=None, check=True, timeout=120, cwd=None):
        cmd = self.command(args, user)
        try:
            proc = subprocess.run(cmd, env=self.env_for(user, env), input=input, text=True,
                                  capture_output=True, timeout=timeout, cwd=cwd or self.home)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"aishell {' '.join(map(str, args))} (as {user}) timed out after "
                        f"{timeout}s\n--- stdout ---\n{_text(e.stdout)}\n--- stderr ---\n"
                        f"{_text(e.stderr)}", pytrace=False)
        if check and proc.returncode != 0:
            pytest.fail(f"aishell {' '.join(map(str, args))} (as {user}) exited "
                        f"{_status(proc.returncode)}\n--- stdout ---\n{proc.stdout}\n"
                        f"--- stderr ---\n{proc.stderr}", pytrace=False)
        return proc

    def popen(self, *args, user="root", env=None, **kwargs):
        """Start aishell without waiting (for SIGINT / kill -9 tests). The Popen's pid is
        aishell's own. stdout/stderr default to pipes, text mode."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("text", True)
        kwargs.setdefault("cwd", self.home)
        return subprocess.Popen(self.command(args, user), env=self.env_for(user, env), **kwargs)

    # --- files in the test's home ------------------------------------------------------------
    def write_home_file(self, relpath, data, mode=0o644):
        """Create HOME/relpath (and its dirs) owned by the unprivileged user."""
        path = os.path.join(self.home, relpath)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        d = parent
        while d != self.home and d.startswith(self.home):
            os.chown(d, self.entry.pw_uid, self.entry.pw_gid)
            d = os.path.dirname(d)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)
        os.chown(path, self.entry.pw_uid, self.entry.pw_gid)
        return path

    def install_ca(self, registry):
        """Put registry's CA at HOME/.aishell/certs.d/HOST:PORT/ca.crt (Docker's convention)."""
        with open(registry.ca_path, "rb") as f:
            return self.write_home_file(f".aishell/certs.d/{registry.host}/ca.crt", f.read())

    def make_dir(self, path):
        """A dir owned by the unprivileged user (e.g. a second store)."""
        os.makedirs(path, exist_ok=True)
        os.chown(path, self.entry.pw_uid, self.entry.pw_gid)
        return path


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _status(code):
    if code < 0:
        try:
            return f"by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"by signal {-code}"
    return f"with status {code}"


@pytest.fixture
def aishell(request, session_dir, _binary_checked, unpriv_user):
    binary, unpriv_ok = _binary_checked
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    workdir = tempfile.mkdtemp(prefix=name + "-", dir=session_dir)
    return AishellRunner(binary, unpriv_ok, workdir, users.check_unpriv_user(unpriv_user))


@pytest.fixture
def registry(session_dir):
    started = []

    def factory(mode="http", tls=None, acl=None, access_log=False):
        reg = start_registry(mode, base_dir=session_dir, tls=tls, acl=acl, access_log=access_log)
        started.append(reg)
        return reg

    yield factory
    for reg in started:
        reg.stop()


@pytest.fixture(scope="session")
def rt_images():
    """The runtime test images (helpers/runtime_images.py: busybox, sudo, many layers), built once."""
    from helpers.runtime_images import ensure_runtime_images
    return ensure_runtime_images()


@pytest.fixture
def busybox(aishell, registry, rt_images):
    """rt-busybox pushed to a fresh registry and pulled into the test's store as the unprivileged
    user (subuid mode); returns its name."""
    reg = registry("http")
    rt_images.push(rt_images.busybox, reg, "busybox:latest")
    name = f"{reg.host}/busybox:latest"
    aishell("pull", name, user="unpriv")
    return name


@pytest.fixture
def pulled(aishell, registry, rt_images):
    """pulled(name) pushes rt-<name> to a fresh registry and pulls it as the unprivileged user."""
    reg = registry("http")

    def pull(name):
        ref = f"{reg.host}/{name}:latest"
        rt_images.push(getattr(rt_images, name), reg, f"{name}:latest")
        aishell("pull", ref, user="unpriv")
        return ref
    return pull


@pytest.fixture(scope="session")
def images():
    cache = os.environ.get("AISHELL_FIXTURES_CACHE", "/var/tmp/aishell-fixtures")
    return ensure_images(cache)


@pytest.fixture
def push():
    return push_image


@pytest.fixture
def fault_proxy():
    started = []

    def factory(upstream_host):
        proxy = FaultProxy(upstream_host)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


@pytest.fixture
def fake_registry():
    started = []

    def factory():
        fake = FakeRegistry()
        started.append(fake)
        return fake

    yield factory
    for fake in started:
        fake.stop()


# A loopback HTTP registry holding the runtime tests' busybox image as busybox:latest, one per
# test module (the build tests' base image). A module may define its own `reg` instead.
@pytest.fixture(scope="module")
def reg(session_dir):
    from helpers.runtime_images import ensure_runtime_images
    rt = ensure_runtime_images()
    r = start_registry("http", base_dir=session_dir)
    rt.push(rt.busybox, r, "busybox:latest")
    yield r
    r.stop()


@pytest.fixture(scope="session")
def dockerd(session_dir):
    """A private dockerd (helpers/dockerd.py) shared by the session: .docker(*args, check=True)."""
    daemon = Dockerd(os.path.join(session_dir, "docker"))
    yield daemon
    daemon.stop()
