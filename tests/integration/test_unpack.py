"""Layer unpacking end to end: `aishell exec` (as the unprivileged user) of images whose layers
are written here with Python's tarfile (so every mode, owner, link and whiteout is exactly what
the test says), laid out as OCI images by hand, pushed with skopeo and pulled by aishell.

  - files, modes, setuid/setgid bits, owners, mtimes, absolute and relative symlinks, hardlinks,
    whiteouts and opaque dirs from a later layer, and a later layer writing beneath a 000 dir
    (umoci#310) come out right inside the container and as mapped ids on the host;
  - the crafted-tar corpus (tests/fixtures/crafted/make_corpus.py) cannot change a canary in the
    store's tmp/ (reachable with "../canary" from the temp unpack dir) or at an absolute path,
    through openat2 and through the O_NOFOLLOW walk, which is forced by a seccomp filter that
    makes openat2 return ENOSYS (as crun's tests do);
  - an unpack killed with SIGKILL leaves no layers/<hex>, and the next run unpacks it fully.
"""
import gzip
import hashlib
import io
import json
import os
import pwd
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from helpers.images import host_arch
from helpers.users import subid_range

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ls", "cat", "stat", "readlink", "test", "id", "true", "echo", "find", "wc"]
MTIME = 1_234_567_890
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}

# A wrapper that installs a seccomp filter making openat2 (437 on every architecture) fail with
# ENOSYS, then execs its arguments. It runs as root (CAP_SYS_ADMIN: no no_new_privs needed, so
# the setuid newuidmap still works) before setpriv drops to the test user; the filter is
# inherited by aishell and by its `__unpack` child in the user namespace.
NO_OPENAT2 = r"""
import ctypes, errno, os, struct, sys
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[os.uname().machine]
def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
def jump(code, k, jt, jf): return struct.pack("HBBI", code, jt, jf, k)
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
prog = b"".join([
    stmt(LD_W_ABS, 4), jump(JEQ_K, AUDIT_ARCH, 0, 3),   # seccomp_data.arch
    stmt(LD_W_ABS, 0), jump(JEQ_K, 437, 0, 1),          # seccomp_data.nr == openat2
    stmt(RET_K, ERRNO | errno.ENOSYS), stmt(RET_K, ALLOW)])
buf = ctypes.create_string_buffer(prog)
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
"""

# Prints the errno name openat2 fails with (or "ok"): proves the wrapper works.
PROBE_OPENAT2 = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
how = (ctypes.c_uint64 * 3)(0o10000000 | 0o200000, 0, 0)   # O_PATH | O_DIRECTORY
fd = libc.syscall(437, -100, b"/", how, 24)
print("ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
"""


# --- building layers and images ------------------------------------------------------------
def _info(name, kind=tarfile.REGTYPE, mode=0o644, data=b"", link="", uid=0, gid=0, mtime=MTIME):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = kind, mode, uid, gid, mtime, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, data


def F(name, data=b"", mode=0o644, **kw):
    return _info(name, tarfile.REGTYPE, mode, data, **kw)


def D(name, mode=0o755, **kw):
    return _info(name, tarfile.DIRTYPE, mode, **kw)


def S(name, target):
    return _info(name, tarfile.SYMTYPE, 0o777, link=target)


def H(name, target):
    return _info(name, tarfile.LNKTYPE, 0o644, link=target)


def tar_bytes(entries):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return out.getvalue()


def busybox_layer():
    with open(BUSYBOX, "rb") as f:
        data = f.read()
    return tar_bytes([D("bin"), F("bin/busybox", data, 0o755)] +
                     [S(f"bin/{a}", "busybox") for a in APPLETS])


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-1", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return data


class Layout:
    """A hand-written OCI image layout (oci-layout, index.json, blobs/sha256)."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.manifests = []

    def blob(self, data):
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", hexd), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + hexd, "size": len(data)}

    def add_image(self, ref, layers):
        """layers: [(uncompressed tar bytes, "gzip"|"zstd"|"none")]; returns the diff_ids."""
        descs, diff_ids = [], []
        for data, how in layers:
            diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
            descs.append({"mediaType": LAYER_TYPES[how], **self.blob(compress(data, how))})
        config = {"architecture": host_arch(), "os": "linux",
                  "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **self.blob(json.dumps(config).encode())},
                    "layers": descs}
        self.manifests = [m for m in self.manifests
                          if m["annotations"]["org.opencontainers.image.ref.name"] != ref]
        self.manifests.append({"mediaType": OCI_MANIFEST,
                               **self.blob(json.dumps(manifest).encode()),
                               "annotations": {"org.opencontainers.image.ref.name": ref}})
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.manifests}, f)
        return diff_ids

    def push(self, ref, registry):
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests",
                        *registry.skopeo_dest_args(admin=True), f"oci:{self.root}:{ref}",
                        f"docker://{registry.host}/{ref}"],
                       check=True, capture_output=True, timeout=120)
        return f"{registry.host}/{ref}"


# The features image: layer 1 busybox, layer 2 everything a root filesystem has, layer 3
# (zstd) whiteouts, an opaque dir and writes beneath layer 2's 000 and read-only dirs.
def features_layers():
    second = tar_bytes([
        D("etc"), F("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n"),
        F("etc/group", b"root:x:0:\nshadow:x:42:\nuser:x:1000:\n"),
        F("etc/motd", b"motd\n", mtime=1_000_000_000),
        D("usr"), D("usr/bin"), D("usr/lib"),
        F("usr/bin/suid", b"#!/bin/sh\n", 0o4755), F("usr/bin/sgid", b"#!/bin/sh\n", 0o2755, gid=42),
        H("usr/bin/suid-link", "usr/bin/suid"), H("usr/bin/abs-link", "/usr/bin/suid"),
        F("usr/lib/libx.so", b"libx\n"),
        S("lib", "/usr/lib"), S("sbin", "usr/bin"),
        D("tmp", 0o1777),
        F("owned", b"owned\n", 0o600, uid=1000, gid=1000),
        D("locked", 0o000), F("locked/secret", b"secret\n", 0o000),
        D("ro", 0o555), F("ro/file", b"ro\n", 0o444),
        D("old"), F("old/file", b"old\n"), F("old-file", b"x\n"),
        D("opq"), F("opq/a", b"a\n"), F("opq/b", b"b\n"),
    ])
    third = tar_bytes([
        F(".wh.old"), F(".wh.old-file"), F("usr/bin/.wh.sgid"),
        D("opq"), F("opq/.wh..wh..opq"), F("opq/c", b"c\n"),
        # As image builders write them: the changed dir's entry (with its mode) before its files.
        D("locked", 0o000), F("locked/new", b"new\n"), D("ro", 0o555), F("ro/new", b"ro-new\n"),
    ])
    return [(busybox_layer(), "gzip"), (second, "gzip"), (third, "zstd")]


INSIDE = r"""
cd /
stat -c '%n %a %u %g %h' /usr/bin/suid /usr/bin/suid-link /usr/bin/abs-link /owned /locked/secret
stat -c '%n %a %u %g' /tmp /ro /locked
stat -c '%n %i' /usr/bin/suid /usr/bin/suid-link /usr/bin/abs-link
stat -c '%n %Y' /etc/motd
echo "lib -> $(readlink /lib)"; echo "sbin -> $(readlink /sbin)"
cat /lib/libx.so /sbin/suid /locked/secret /locked/new /ro/new
for p in /old /old-file /usr/bin/sgid /opq/a /opq/b; do test -e $p || test -L $p || echo "gone $p"; done
ls /opq
"""


def run_exec(aishell, image, *cmd, mode="subuid", check=False, **kw):
    return aishell("exec", "--image", image, "--", *cmd, user="unpriv",
                   env={"AISHELL_USERNS": mode}, check=check, **kw)


def wrapped(aishell, wrapper_args, args, timeout=120):
    """aishell as the test user under a wrapper program (run by root before setpriv)."""
    cmd = [sys.executable, "-c", NO_OPENAT2] + wrapper_args + aishell.command(args, "unpriv")
    return subprocess.run(cmd, env=aishell.env_for("unpriv", {"AISHELL_USERNS": "subuid"}),
                          cwd=aishell.home, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("unpack-layout"))
    os.chmod(root, 0o755)
    return Layout(os.path.join(root, "oci"))


def test_openat2_wrapper_makes_openat2_enosys():
    """The seccomp wrapper itself: without it openat2 works here, under it ENOSYS."""
    plain = subprocess.run([sys.executable, "-c", PROBE_OPENAT2], capture_output=True, text=True)
    assert plain.stdout.strip() == "ok", plain.stderr
    under = subprocess.run([sys.executable, "-c", NO_OPENAT2, sys.executable, "-c", PROBE_OPENAT2],
                           capture_output=True, text=True)
    assert under.stdout.strip() == "ENOSYS", under.stderr


@pytest.mark.parametrize("resolver", ["openat2", "walk"])
def test_features_come_out_right_inside_and_as_mapped_ids(aishell, registry, layout, unpriv_user,
                                                          resolver):
    diff_ids = layout.add_image("features:1", features_layers())
    image = layout.push("features:1", registry("http"))
    if resolver == "openat2":
        r = run_exec(aishell, image, "sh", "-c", INSIDE)
    else:
        r = wrapped(aishell, [], ["exec", "--image", image, "--", "sh", "-c", INSIDE])
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    lines = set(out)
    for expected in ["/usr/bin/suid 4755 0 0 3", "/usr/bin/suid-link 4755 0 0 3",
                     "/usr/bin/abs-link 4755 0 0 3", "/owned 600 1000 1000 1", "/tmp 1777 0 0",
                     "/ro 555 0 0", "/locked 0 0 0", "/locked/secret 0 0 0 1", "/etc/motd 1000000000",
                     "lib -> /usr/lib", "sbin -> usr/bin",
                     "gone /old", "gone /old-file", "gone /usr/bin/sgid", "gone /opq/a", "gone /opq/b"]:
        assert expected in lines, r.stdout
    inodes = {line.split()[1] for line in out if line.startswith("/usr/bin/") and
              len(line.split()) == 2}
    assert len(inodes) == 1, r.stdout               # the hardlinks share one inode
    assert "libx\n#!/bin/sh\nsecret\nnew\nro-new\n" in r.stdout
    assert out[-1] == "c"                             # the opaque dir shows only the new layer

    # On the host: owners landed as ids of the caller's subuid range, whiteouts are 0/0 char
    # devices, the opaque dir has its xattr, and the 000 dir kept its mode in its own layer.
    entry = pwd.getpwnam(unpriv_user)
    start, _ = subid_range("/etc/subuid", unpriv_user)
    layers = os.path.join(aishell.store, "layers")
    second, third = (os.path.join(layers, d.split(":")[1]) for d in diff_ids[1:])
    assert os.lstat(os.path.join(second, "owned")).st_uid == start + 999
    assert os.lstat(os.path.join(second, "usr/bin/suid")).st_uid == entry.pw_uid
    assert os.lstat(os.path.join(second, "usr/bin/suid")).st_mode & 0o7777 == 0o4755
    assert os.lstat(os.path.join(second, "locked")).st_mode & 0o7777 == 0
    wh = os.lstat(os.path.join(third, "old"))
    assert (wh.st_mode & 0o170000, wh.st_rdev) == (0o020000, 0)
    assert os.getxattr(os.path.join(third, "opq"), "user.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(third, ".wh.old"))
    # The run dir goes away once the container's PID 1 is gone, after aishell has returned.
    tmp = os.path.join(aishell.store, "tmp")
    _wait_for_run_dirs_gone(tmp)
    # Only the user namespace holder's record (and its lock) stays: test_exec_userns_holder.py.
    assert [n for n in os.listdir(tmp) if not n.startswith("userns-")] == []


def test_single_mode_keeps_modes_and_whiteouts(aishell, registry, layout):
    layout.add_image("features:1", features_layers())
    image = layout.push("features:1", registry("http"))
    r = run_exec(aishell, image, "sh", "-c", INSIDE, mode="single")
    assert r.returncode == 0, r.stderr
    lines = set(r.stdout.splitlines())
    # Only the caller is mapped: uid 1000 of the tar stays the caller's (0 inside).
    for expected in ["/usr/bin/suid 4755 0 0 3", "/owned 600 0 0 1", "gone /old", "gone /opq/a"]:
        assert expected in lines, r.stdout


# --- the crafted-tar corpus through aishell ---------------------------------------------------
# The cases the issue names (the unit tests run the whole corpus).
CORPUS_CASES = ["abs_path", "dotdot", "symlink_dot", "dir_symlink_then_write",
                "dir_symlink_relative_then_write", "hardlink_abs", "hardlink_dotdot_then_write",
                "chmod_through_symlink_file", "chmod_through_symlink_dir", "dir_mode_then_symlink",
                "whiteout_dotdot", "whiteout_replaces_symlink", "symlink_abs_target_then_write",
                "symlink_abs_target_kept"]


def _snapshot(paths, listed):
    # listed: a dir whose entries are compared, not its mtime (temp unpack dirs come and go).
    out = [tuple(sorted(os.listdir(listed)))]
    for p in paths:
        st = os.lstat(p)
        out.append((p, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink))
        if os.path.isdir(p):
            out.append(tuple(sorted(os.listdir(p))))
        else:
            with open(p, "rb") as f:
                out.append(f.read())
    return out


def _wait_for_run_dirs_gone(tmp, seconds=20):
    """exec returns the command's status first and removes its run dir (tmp/run-*) once the
    container's PID 1 is gone: wait for that before comparing tmp/."""
    deadline = time.monotonic() + seconds
    while any(n.startswith("run-") for n in os.listdir(tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("resolver", ["openat2", "walk"])
def test_crafted_tars_leave_the_canaries_alone(aishell, registry, layout, fixtures_dir, unpriv_user,
                                               tmp_path, resolver):
    reg = registry("http")
    # busybox also at /.t/busybox: some hostile layers (bin -> /usr/bin) shadow /bin.
    with open(BUSYBOX, "rb") as f:
        bb = tar_bytes([D(".t"), F(".t/busybox", f.read(), 0o755)])
    layout.add_image("bb:1", [(bb, "gzip")])
    # The store's tmp/ holds the temp unpack dirs: "../canary" from one of them is tmp/canary.
    # The canaries belong to the test user, so a write through a hole would succeed.
    run_exec(aishell, layout.push("bb:1", reg), "/.t/busybox", "true", check=True)
    tmp = os.path.join(aishell.store, "tmp")
    canary, canary_dir = os.path.join(tmp, "canary"), os.path.join(tmp, "canary_dir")
    entry = pwd.getpwnam(unpriv_user)
    with open(canary, "w") as f:
        f.write("canary\n")
    os.mkdir(canary_dir)
    with open(os.path.join(canary_dir, "inner"), "w") as f:
        f.write("inner\n")
    for p in (canary, canary_dir, os.path.join(canary_dir, "inner")):
        os.chown(p, entry.pw_uid, entry.pw_gid)
    os.chmod(canary, 0o640)
    os.chmod(canary_dir, 0o750)
    watched = [canary, canary_dir, os.path.join(canary_dir, "inner")]

    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, os.path.join(fixtures_dir, "crafted", "make_corpus.py"),
                    str(corpus), "--canary-file", canary, "--canary-dir", canary_dir], check=True)
    with open(corpus / "cases.json") as f:
        cases = {c["name"]: c for c in json.load(f)}
    _wait_for_run_dirs_gone(tmp)
    before = _snapshot(watched, tmp)
    for name in CORPUS_CASES:
        case = cases[name]
        with open(case["file"], "rb") as f:
            hostile = f.read()
        ref = f"crafted-{name.replace('_', '-')}:1"
        layout.add_image(ref, [(bb, "gzip"), (hostile, "gzip")])
        image = layout.push(ref, reg)
        args = ["exec", "--image", image, "--", "/.t/busybox", "true"]
        if resolver == "openat2":
            r = aishell(*args, user="unpriv", env={"AISHELL_USERNS": "subuid"}, check=False)
        else:
            r = wrapped(aishell, [], args)
        errors = [line for line in r.stderr.splitlines() if line.startswith("aishell: error:")]
        if case["expect"] == "error":
            assert r.returncode == 125, (name, r.stderr)
            # The first error line names the entry; test_unpack_error_is_one_line checks that
            # it is the only one.
            assert errors and "layer entry '" in errors[0] and case["error"] in errors[0], \
                (name, r.stderr)
        else:
            assert r.returncode == 0, (name, r.stderr)
        _wait_for_run_dirs_gone(tmp)
        assert _snapshot(watched, tmp) == before, name


def test_unpack_error_is_one_line(aishell, registry, layout, fixtures_dir, tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, os.path.join(fixtures_dir, "crafted", "make_corpus.py"),
                    str(corpus), "--canary-file", "/nonexistent/c", "--canary-dir", "/nonexistent/d"],
                   check=True)
    with open(corpus / "dotdot.tar", "rb") as f:
        layout.add_image("crafted-dotdot:1", [(busybox_layer(), "gzip"), (f.read(), "gzip")])
    r = run_exec(aishell, layout.push("crafted-dotdot:1", registry("http")), "true")
    assert r.returncode == 125
    errors = [line for line in r.stderr.splitlines() if line.startswith("aishell: error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].endswith("layer entry '../canary': path escapes the layer root"), r.stderr


# --- interrupted unpack -----------------------------------------------------------------------
# 3000 files of 32 KiB: big enough to be caught mid-unpack, few enough inodes for a quick
# removal afterwards (the store is deleted at the end of the session).
BIG_FILES, BIG_SIZE = 3000, 32 * 1024


def big_layer(files=BIG_FILES, size=BIG_SIZE):
    entries = [D("big")]
    for i in range(files):
        entries.append(F(f"big/f{i:05d}", (b"%05d" % i) * (size // 5)))
    return tar_bytes(entries)


def test_killed_unpack_leaves_nothing_trusted(aishell, registry, layout):
    big = big_layer()
    diff_ids = layout.add_image("big:1", [(big, "gzip"), (busybox_layer(), "gzip")])
    image = layout.push("big:1", registry("http"))
    aishell("pull", image, user="unpriv")
    target = os.path.join(aishell.store, "layers", diff_ids[0].split(":")[1])
    tmp = os.path.join(aishell.store, "tmp")

    proc = aishell.popen("exec", "--image", image, "--", "true", user="unpriv",
                         env={"AISHELL_USERNS": "subuid"}, start_new_session=True)
    # Wait until the big layer's temp tree has some files, then kill aishell and its
    # `__unpack` child (same process group) with SIGKILL.
    deadline = time.monotonic() + 60
    partial = None
    while time.monotonic() < deadline and partial is None:
        for name in os.listdir(tmp) if os.path.isdir(tmp) else []:
            big_dir = os.path.join(tmp, name, "big")
            if name.startswith("unpack-") and os.path.isdir(big_dir) and len(os.listdir(big_dir)) > 100:
                partial = os.path.join(tmp, name)
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert partial is not None, "the unpack finished before it could be interrupted"
    assert not os.path.exists(target)
    assert len(os.listdir(os.path.join(partial, "big"))) < BIG_FILES

    last = f"f{BIG_FILES - 1:05d}"
    r = run_exec(aishell, image, "sh", "-c", f"ls /big | wc -l; cat /big/{last} | wc -c")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(BIG_FILES), str(BIG_SIZE // 5 * 5)]
    assert len(os.listdir(os.path.join(target, "big"))) == BIG_FILES
