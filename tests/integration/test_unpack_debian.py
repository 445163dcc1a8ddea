"""A real Debian image: `debootstrap --variant=minbase bookworm`, turned into an OCI image by
umoci (the same image and cache as scripts/bench: $AISHELL_BENCH_CACHE/debian-layout, default
/var/tmp/aishell-bench), pushed by skopeo, then pulled and run by aishell as the unprivileged
user. Every entry of its layer tar must come out inside the container as the tar says: type,
mode (setuid/setgid included), owner, size, mtime and symlink target, hardlinks sharing an inode;
and absolute symlinks (/etc/alternatives/...) resolve inside the container.

debootstrap takes minutes and needs the Debian mirror, so its result is cached on disk: only
the first run on a machine pays for it (scripts/bench shares the cache).
"""
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

CACHE = os.environ.get("AISHELL_BENCH_CACHE", "/var/tmp/aishell-bench")
MIRROR = os.environ.get("AISHELL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Mount points and files the runtime binds or creates: not the image's.
NOT_FROM_IMAGE = ("dev", "proc", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname")


def debian_layout():
    """OCI layout with bookworm minbase (cached; built as scripts/bench builds it)."""
    layout = os.path.join(CACHE, "debian-layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix="debian-", dir=CACHE)
    try:
        rootfs = os.path.join(work, "rootfs")
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, MIRROR],
                       check=True, capture_output=True, timeout=1200)
        tmp_layout = os.path.join(work, "layout")
        image = f"{tmp_layout}:bookworm"
        bundle = os.path.join(work, "bundle")
        for cmd in (["umoci", "init", "--layout", tmp_layout], ["umoci", "new", "--image", image],
                    ["umoci", "unpack", "--image", image, bundle],
                    ["cp", "-a", f"{rootfs}/.", os.path.join(bundle, "rootfs")],
                    ["umoci", "repack", "--image", image, bundle],
                    ["umoci", "config", "--image", image, "--config.cmd", "bash"],
                    ["umoci", "gc", "--layout", tmp_layout]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        try:
            os.rename(tmp_layout, layout)
        except OSError:  # another run (or scripts/bench) won the race
            pass
    finally:
        _remove_work(work)
    return layout


def _remove_work(work):
    """Removes the build dir unless something is still mounted beneath it: debootstrap mounts
    /proc and /sys in the target while it runs (a failed run may leave them), and removing
    through such a mount would delete outside the dir."""
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(work + "/")]
    if mounted:
        raise AssertionError(f"left {work} in place: still mounted beneath it: {mounted}")
    shutil.rmtree(work, ignore_errors=True)


def _clean(name):
    """A tar name as a path relative to the root ("" for the root itself)."""
    return os.path.normpath("/" + name).lstrip("/")


def _layer_paths(layout):
    """The image's layer blobs (umoci repack: one gzip layer), via its manifest."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    (desc,) = [d for d in index["manifests"]
               if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "bookworm"]

    def blob(digest):
        return os.path.join(layout, "blobs", *digest.split(":", 1))
    with open(blob(desc["digest"])) as f:
        manifest = json.load(f)
    return [blob(layer["digest"]) for layer in manifest["layers"]]


def expected_tree(layout):
    """{path: (type, mode, uid, gid, size, mtime, link)} after applying every layer."""
    tree = {}
    for path in _layer_paths(layout):
        with tarfile.open(path, "r:*") as tar:
            for ti in tar:
                name = _clean(ti.name)
                base = os.path.basename(name)
                if base.startswith(".wh."):
                    raise AssertionError("bookworm from umoci repack should have no whiteouts")
                tree[name] = ti
    return tree


def _relevant(path):
    return path and not any(path == p or path.startswith(p + "/") for p in NOT_FROM_IMAGE)


FIND = (r"find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o "
        r"-printf '%y|%m|%U|%G|%s|%T@|%i|%p|%l\n'")


@pytest.fixture(scope="module")
def debian():
    return debian_layout()


def test_debian_image_unpacks_intact(aishell, registry, debian):
    reg = registry("http")
    subprocess.run(["skopeo", "copy", "--quiet", *reg.skopeo_dest_args(admin=True),
                    f"oci:{debian}:bookworm", f"docker://{reg.host}/debian:bookworm"],
                   check=True, capture_output=True, timeout=300)
    image = f"{reg.host}/debian:bookworm"
    r = aishell("exec", "--image", image, "--", "sh", "-c", FIND, user="unpriv",
                env={"AISHELL_USERNS": "subuid"}, check=False, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # debootstrap's /dev nodes cannot be made without root: skipped, with one note.
    notes = [line for line in r.stderr.splitlines() if line.startswith("aishell: note: layer ")]
    assert len(notes) == 1 and "device node(s) (not permitted without root)" in notes[0], r.stderr
    inside = {}
    for line in r.stdout.splitlines():
        kind, mode, uid, gid, size, mtime, ino, path, link = line.split("|", 8)
        inside[path.lstrip("/")] = (kind, int(mode, 8), int(uid), int(gid), int(size),
                                    int(float(mtime)), int(ino), link)

    tree = expected_tree(debian)
    kinds = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d",
             tarfile.SYMTYPE: "l", tarfile.FIFOTYPE: "p", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b"}
    problems, setuid, hardlinks, absolute, compared = [], [], 0, 0, 0
    for path, ti in tree.items():
        if not _relevant(path):
            continue
        compared += 1
        got = inside.get(path)
        if got is None:
            problems.append(f"{path}: missing")
            continue
        kind, mode, uid, gid, size, mtime, ino, link = got
        if ti.type == tarfile.LNKTYPE:
            target = _clean(ti.linkname)
            if inside.get(target, (None,) * 7)[6] != ino:
                problems.append(f"{path}: not a hardlink of {target}")
            hardlinks += 1
            continue
        want = (kinds.get(ti.type, "?"), ti.mode & 0o7777, ti.uid, ti.gid)
        if (kind, mode, uid, gid) != want:
            problems.append(f"{path}: {(kind, oct(mode), uid, gid)} != {(want[0], oct(want[1]), *want[2:])}")
        if kind == "f" and size != ti.size:
            problems.append(f"{path}: size {size} != {ti.size}")
        if kind != "d" and mtime != int(ti.mtime):   # a dir's mtime moves with mounts inside
            problems.append(f"{path}: mtime {mtime} != {int(ti.mtime)}")
        if kind == "l":
            if link != ti.linkname:
                problems.append(f"{path}: -> {link} != {ti.linkname}")
            absolute += link.startswith("/")
        if ti.mode & 0o6000:
            setuid.append(path)
    assert not problems, "\n".join(problems[:50])
    # What makes this image a real test: setuid su and passwd, hardlinks, absolute symlinks.
    assert {"usr/bin/su", "usr/bin/passwd"} <= set(setuid), setuid
    assert compared > 5000 and hardlinks > 0 and absolute > 0, (compared, hardlinks, absolute)

    # Absolute symlinks resolve against the container's root, setuid bits work as root-owned.
    r = aishell("exec", "--image", image, "--", "sh", "-c",
                "readlink /etc/alternatives/awk; awk 'BEGIN { print 6 * 7 }'; readlink /bin; "
                "stat -c '%a %U' /usr/bin/su /usr/bin/passwd; su -s /bin/sh -c 'id -u' nobody",
                user="unpriv", env={"AISHELL_USERNS": "subuid"}, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/usr/bin/mawk", "42", "usr/bin", "4755 root", "4755 root",
                                     "65534"], r.stdout
