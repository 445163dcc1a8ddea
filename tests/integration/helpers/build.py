"""Shared pieces of the `aishell build` integration tests (test_build_stages, test_build_real,
test_build_faults): build contexts owned by the unprivileged user, running a build in a given
user-namespace mode, and reading the built image back without aishell (index.json, manifest,
config, layer tars, an unpacked tree).

`module_runner` gives a module-scoped runner (its own store and HOME), so a module can build
once and check the result from several tests."""
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile

from . import users
from .store import read_blob

MODES = ("subuid", "single")


def module_runner(session_dir, binary_checked, unpriv_user, name):
    """An AishellRunner (conftest's class) for a whole module; fresh workdir `name-XXXX`."""
    from conftest import AishellRunner  # the session's conftest module, loaded by pytest
    binary, unpriv_ok = binary_checked
    workdir = tempfile.mkdtemp(prefix=name + "-", dir=session_dir)
    return AishellRunner(binary, unpriv_ok, workdir, users.check_unpriv_user(unpriv_user))


def make_context(runner, files, name="ctx"):
    """A build context dir owned by the unprivileged user.

    files: {relpath: str | bytes | ("link", target)}. An existing dir of that name is replaced."""
    ctx = os.path.join(runner.workdir, name)
    shutil.rmtree(ctx, ignore_errors=True)
    runner.make_dir(ctx)
    uid, gid = runner.entry.pw_uid, runner.entry.pw_gid
    for rel, content in files.items():
        path = os.path.join(ctx, rel)
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        while d != ctx:
            os.chown(d, uid, gid)
            d = os.path.dirname(d)
        if isinstance(content, tuple):
            os.symlink(content[1], path)
            os.lchown(path, uid, gid)
            continue
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        os.chown(path, uid, gid)
    return ctx


def write_context_file(runner, ctx, rel, content):
    path = os.path.join(ctx, rel)
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    os.chown(path, runner.entry.pw_uid, runner.entry.pw_gid)


def build(runner, ctx, *args, mode="subuid", check=True, timeout=180, env=None):
    """`aishell build ARGS CTX` as the unprivileged user in the given userns mode (env: more
    variables for aishell)."""
    return runner("build", *args, ctx, user="unpriv", env={"AISHELL_USERNS": mode, **(env or {})},
                  check=check, timeout=timeout)


def image_id(proc):
    """The config digest a build prints as its last stdout line."""
    return proc.stdout.strip().splitlines()[-1]


def step_lines(stderr):
    """The `[n/N] ...` and `CACHED [n/N] ...` lines of a build's output."""
    return [line for line in stderr.splitlines() if re.match(r"^(CACHED )?\[\d+/\d+\] ", line)]


def index_digest(store, name):
    with open(os.path.join(store, "oci", "index.json")) as f:
        for m in json.load(f)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return m["digest"]
    raise AssertionError(f"{name} not in index.json")


def manifest_and_config(store, name):
    manifest = json.loads(read_blob(store, index_digest(store, name)))
    config = json.loads(read_blob(store, manifest["config"]["digest"]))
    return manifest, config


def layer_members(store, desc):
    """{name without trailing /: TarInfo} of one layer blob."""
    data = read_blob(store, desc["digest"])
    if desc["mediaType"].endswith("gzip"):
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name.rstrip("/"): m for m in t.getmembers()}


def tree(rootfs, under="/"):
    """{path: kind} ("dir", "file", "link") of an unpacked rootfs, below `under`."""
    out = {}
    start = os.path.join(rootfs, under.lstrip("/"))
    if not os.path.lexists(start):
        return out
    for root, dirs, files in os.walk(start):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = "/" + os.path.relpath(p, rootfs)
            out[rel] = "link" if os.path.islink(p) else "dir" if os.path.isdir(p) else "file"
    return out


def tree_details(rootfs, under):
    """{path: (kind, mode & 0o7777, uid, gid)} below `under` (symlinks not followed). umoci
    unpack --rootless keeps the image's owners in user.rootlesscontainers xattrs, not in
    st_uid, so owners come from layer tars, not from here; this is for kinds and modes."""
    out = {}
    for path, kind in tree(rootfs, under).items():
        st = os.lstat(os.path.join(rootfs, path.lstrip("/")))
        out[path] = (kind, st.st_mode & 0o7777)
    return out


def final_entries(store, manifest):
    """{path: TarInfo} of the image as its layers stack up (whiteouts and opaque markers
    applied): the owners and modes an extractor gives the final tree."""
    result = {}
    for desc in manifest["layers"]:
        members = layer_members(store, desc)
        for name in sorted(members):
            path = os.path.normpath("/" + name.lstrip("/"))
            base = os.path.basename(path)
            parent = os.path.dirname(path)
            if base == ".wh..wh..opq":
                for p in [p for p in result if p.startswith(parent.rstrip("/") + "/")]:
                    del result[p]
            elif base.startswith(".wh."):
                gone = os.path.join(parent, base[4:])
                for p in [p for p in result if p == gone or p.startswith(gone + "/")]:
                    del result[p]
        for name, info in members.items():
            path = os.path.normpath("/" + name.lstrip("/"))
            if not os.path.basename(path).startswith(".wh."):
                result[path] = info
    return result
