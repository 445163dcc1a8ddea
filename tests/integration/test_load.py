"""`aishell load` (issue 9): archives of `docker save` (Docker 20.10's layout with <id>/layer.tar
and symlinked shared layers, and Docker 25's, built here from it), gzip'd and through stdin,
skopeo's oci-archive with two images, podman's docker-archive and oci-archive, a round trip that
keeps manifest digests, and hostile archives that must fail with one error line and leave the
store's files exactly as they were.

The Docker images: a busybox rootfs `docker import`ed, and a classic-builder image on it with two
RUN layers (the second deletes a file the first made), ENV and WORKDIR.
"""
import fcntl
import gzip
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import termios
import time

import pytest

from helpers import store as store_check
from helpers import users
from helpers.runtime_images import BUSYBOX, PATH_ENV, Layer

DOCKERFILE = """FROM load-base:1
RUN echo one > /one && mkdir /data && echo gone > /data/gone
RUN rm /data/gone && echo two > /data/two
ENV GREETING=hello
WORKDIR /data
"""
CHECK_SCRIPT = "cat /one /data/two; test -e /data/gone || echo gone-is-gone; echo $GREETING; pwd"
CHECK_OUTPUT = "one\ntwo\ngone-is-gone\nhello\n/data\n"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_rootfs():
    layer = Layer()
    layer.host_file("bin/busybox", BUSYBOX, 0o755)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    layer.file("etc/group", "root:x:0:\n")
    layer.dir("tmp", 0o1777)
    return layer.finish()


def read_members(path):
    """[(TarInfo, bytes or None)] in archive order."""
    out = []
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isreg() else None
            out.append((info, data))
    return out


def write_members(path, members, compress=False):
    """Writes [(TarInfo, bytes or None)] as a tar (names as given, even hostile ones)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = _copy_info(info)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if compress else data)
    os.chmod(path, 0o644)
    return path


def _copy_info(info):
    copy = tarfile.TarInfo(info.name)
    for attr in ("type", "mode", "uid", "gid", "mtime", "linkname", "uname", "gname"):
        setattr(copy, attr, getattr(info, attr))
    return copy


def file_info(name, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 1700000000
    return info


def link_info(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = 0o777
    return info


class DockerImages:
    """What the module's dockerd made: old.tar (`docker save` of both images) and Docker's ids."""

    def __init__(self, dockerd, work):
        self.work = work
        rootfs = os.path.join(work, "rootfs.tar")
        with open(rootfs, "wb") as f:
            f.write(busybox_rootfs())
        dockerd.docker("import", "--change", f"ENV {PATH_ENV}", "--change", 'CMD ["sh"]', rootfs, "load-base:1")
        ctx = os.path.join(work, "ctx")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        dockerd.docker("build", "--network", "none", "--force-rm", "-q", "-t", "load-app:1", ctx, timeout=300)
        self.old_tar = os.path.join(work, "old.tar")
        dockerd.docker("save", "-o", self.old_tar, "load-app:1", "load-base:1")
        os.chmod(self.old_tar, 0o644)
        self.inspect = {}
        for name in ("load-app:1", "load-base:1"):
            info = json.loads(dockerd.docker("image", "inspect", name).stdout)[0]
            self.inspect[name] = {"id": info["Id"], "diff_ids": info["RootFS"]["Layers"]}
        self.members = read_members(self.old_tar)

    def path(self, name):
        return os.path.join(self.work, name)

    def member(self, name):
        for info, data in self.members:
            if info.name == name:
                return info, data
        raise KeyError(name)

    def manifest(self):
        return json.loads(self.member("manifest.json")[1])

    def app_entry(self):
        return next(e for e in self.manifest() if e["RepoTags"] == ["load-app:1"])

    def docker25(self, with_index=True, with_manifest=True):
        """The same images in Docker 25's layout: blobs/sha256 for configs and (plain) layers, an
        OCI manifest per image in index.json (the tag alone in ref.name, the full name in
        io.containerd.image.name), manifest.json pointing into blobs, manifest.json last."""
        blobs, docker_manifest, index = {}, [], []
        for entry in self.manifest():
            config = self.member(entry["Config"])[1]
            blobs[sha256(config)] = config
            layers = []
            for layer_path in entry["Layers"]:
                data = self.resolve(layer_path)
                blobs[sha256(data)] = data
                layers.append({"mediaType": OCI_LAYER_TAR, "digest": sha256(data), "size": len(data)})
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                                   "layers": layers}).encode()
            blobs[sha256(manifest)] = manifest
            tag = entry["RepoTags"][0]
            index.append({"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
                          "annotations": {CONTAINERD_NAME: "docker.io/library/" + tag, REF_NAME: tag.split(":")[1]}})
            docker_manifest.append({"Config": "blobs/sha256/" + sha256(config)[7:], "RepoTags": entry["RepoTags"],
                                    "Layers": ["blobs/sha256/" + sha256(l)[7:] for l in
                                               (self.resolve(p) for p in entry["Layers"])]})
        members = [(file_info("blobs/sha256/" + d[7:]), data) for d, data in sorted(blobs.items())]
        if with_index:
            members.append((file_info("oci-layout"), b'{"imageLayoutVersion":"1.0.0"}'))
            members.append((file_info("index.json"), json.dumps(
                {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index}).encode()))
        if with_manifest:
            members.append((file_info("manifest.json"), json.dumps(docker_manifest).encode()))
        return members, index

    def resolve(self, name):
        info, data = self.member(name)
        while info.issym():
            name = os.path.normpath(os.path.join(os.path.dirname(name), info.linkname))
            info, data = self.member(name)
        return data


@pytest.fixture(scope="module")
def docker_images(dockerd, session_dir):
    work = os.path.join(session_dir, "load-docker")
    os.makedirs(work)
    os.chmod(work, 0o755)
    return DockerImages(dockerd, work)


def run_load(aishell, *args, stdin_path=None, user="unpriv", store=None):
    env = aishell.env_for(user, {"AISHELL_STORE": store} if store else None)
    with open(stdin_path or os.devnull, "rb") as stdin:
        return subprocess.run(aishell.command(["load", *args], user), env=env, stdin=stdin, capture_output=True,
                              text=True, cwd=aishell.home, timeout=300)


def loaded_names(proc):
    assert proc.returncode == 0, proc.stderr
    return sorted(line.removeprefix("Loaded image: ") for line in proc.stdout.splitlines())


def inspect(aishell, name, store=None):
    env = {"AISHELL_STORE": store} if store else None
    return json.loads(aishell("inspect", name, user="unpriv", env=env).stdout)


def check_runs(aishell, name):
    # From / (outside any project: nothing is bound) the image's WORKDIR applies.
    r = aishell("exec", "--image", name, "--", "sh", "-c", CHECK_SCRIPT, user="unpriv", cwd="/")
    assert r.stdout == CHECK_OUTPUT


def check_store(aishell, store=None):
    assert store_check.verify_store(store or aishell.store) == []


def index_digests(store):
    return {m["annotations"][REF_NAME]: m["digest"] for m in store_check.read_index(store)["manifests"]}


# --- Docker's archives ------------------------------------------------------------------------

def test_docker_save_archive_loads_and_runs(aishell, docker_images):
    # Docker 20.10 writes a layer that two images share once and links the second to it.
    links = [info for info, _ in docker_images.members if info.issym() and info.name.endswith("/layer.tar")]
    assert links, "docker save wrote no symlinked layer.tar: the test no longer covers links"
    r = run_load(aishell, "-i", docker_images.old_tar)
    assert loaded_names(r) == ["load-app:1", "load-base:1"]
    for name, docker in docker_images.inspect.items():
        info = inspect(aishell, name)
        assert info["Id"] == docker["id"]  # the config kept byte for byte
        assert [l["diffID"] for l in info["Layers"]] == docker["diff_ids"]
        assert {l["mediaType"] for l in info["Layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
        assert info["ManifestMediaType"] == OCI_MANIFEST
    check_runs(aishell, "load-app:1")
    check_store(aishell)


def test_gzipped_docker_archive_through_stdin_with_zstd_layers(aishell, docker_images):
    gz = docker_images.path("old.tar.gz")
    if not os.path.exists(gz):
        with open(docker_images.old_tar, "rb") as src, open(gz, "wb") as dst:
            dst.write(gzip.compress(src.read(), compresslevel=1))
        os.chmod(gz, 0o644)
    r = run_load(aishell, "--compression", "zstd", stdin_path=gz)
    assert loaded_names(r) == ["load-app:1", "load-base:1"]
    info = inspect(aishell, "load-app:1")
    assert info["Id"] == docker_images.inspect["load-app:1"]["id"]
    assert {l["mediaType"] for l in info["Layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    check_runs(aishell, "load-app:1")
    # The same archive again: nothing new, the same manifests.
    before = index_digests(aishell.store)
    assert loaded_names(run_load(aishell, "-i", gz, "--compression", "zstd")) == ["load-app:1", "load-base:1"]
    assert index_digests(aishell.store) == before


def test_docker25_archive_uses_its_oci_side(aishell, docker_images):
    members, index = docker_images.docker25()
    path = write_members(docker_images.path("docker25.tar"), members)
    r = run_load(aishell, "-i", path)
    # RepoTags name the images, not the bare tag in ref.name.
    assert loaded_names(r) == ["load-app:1", "load-base:1"]
    # The archive's manifests, unchanged.
    assert sorted(index_digests(aishell.store).values()) == sorted(e["digest"] for e in index)
    info = inspect(aishell, "load-app:1")
    assert info["Id"] == docker_images.inspect["load-app:1"]["id"]
    assert {l["mediaType"] for l in info["Layers"]} == {OCI_LAYER_TAR}  # the OCI side, as it is
    check_runs(aishell, "load-app:1")
    check_store(aishell)


def test_docker25_oci_side_alone_takes_the_containerd_name(aishell, docker_images):
    members, _ = docker_images.docker25(with_manifest=False)
    path = write_members(docker_images.path("docker25-oci.tar"), members)
    assert loaded_names(run_load(aishell, "-i", path)) == ["docker.io/library/load-app:1",
                                                             "docker.io/library/load-base:1"]
    check_runs(aishell, "docker.io/library/load-app:1")


def test_docker25_docker_side_alone_points_into_blobs(aishell, docker_images):
    members, _ = docker_images.docker25(with_index=False)
    path = write_members(docker_images.path("docker25-docker.tar"), members)
    assert loaded_names(run_load(aishell, "-i", path)) == ["load-app:1", "load-base:1"]
    info = inspect(aishell, "load-app:1")
    assert info["Id"] == docker_images.inspect["load-app:1"]["id"]
    assert {l["mediaType"] for l in info["Layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    check_runs(aishell, "load-app:1")


def test_name_renames_the_only_image(aishell, docker_images):
    members = [(i, d) for i, d in docker_images.members if i.name != "manifest.json"]
    members.append((file_info("manifest.json"), json.dumps([docker_images.app_entry()]).encode()))
    path = write_members(docker_images.path("app-only.tar"), members)
    assert loaded_names(run_load(aishell, "-i", path, "--name", "team/app:renamed")) == ["team/app:renamed"]
    assert list(store_check.image_names(aishell.store)) == ["team/app:renamed"]
    check_runs(aishell, "team/app:renamed")
    r = run_load(aishell, "-i", docker_images.old_tar, "--name", "x:1")
    assert r.returncode == 1
    assert r.stderr == (f"aishell: error: load {docker_images.old_tar}: --name names one image, and the archive "
                        "holds 2 (hint: load it without --name, then tag what you need)\n")


# --- skopeo, podman, round trip ---------------------------------------------------------------

def skopeo(*args):
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True, timeout=300)


def oci_archive_manifests(path):
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile("index.json"))["manifests"]


def tar_layout(layout, path):
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(os.path.join(layout, name), arcname=name)
    os.chmod(path, 0o644)
    return path


def test_skopeo_oci_archive_with_two_images(aishell, docker_images):
    layout = docker_images.path("skopeo-layout")
    for name in ("load-app:1", "load-base:1"):
        skopeo("copy", f"docker-archive:{docker_images.old_tar}:{name}", f"oci:{layout}:example.com/team/{name}")
    with open(os.path.join(layout, "index.json")) as f:
        expected = {m["annotations"][REF_NAME]: m["digest"] for m in json.load(f)["manifests"]}
    path = tar_layout(layout, docker_images.path("skopeo-two.tar"))
    r = run_load(aishell, "-i", path)
    assert loaded_names(r) == ["example.com/team/load-app:1", "example.com/team/load-base:1"]
    assert index_digests(aishell.store) == expected
    check_runs(aishell, "example.com/team/load-app:1")
    check_store(aishell)


def test_round_trip_keeps_manifest_digests(aishell, docker_images):
    # The way out is skopeo's oci-archive of the store (another writer than aishell save, whose
    # round trips test_save.py checks).
    one = docker_images.path("skopeo-one.tar")
    skopeo("copy", f"docker-archive:{docker_images.old_tar}:load-app:1", f"oci-archive:{one}:team/app:1")
    os.chmod(one, 0o644)
    assert loaded_names(run_load(aishell, "-i", one)) == ["team/app:1"]
    first = index_digests(aishell.store)
    back = os.path.join(aishell.workdir, "back.tar")
    skopeo("copy", f"oci:{store_check.oci_dir(aishell.store)}:team/app:1", f"oci-archive:{back}:team/app:1")
    os.chmod(back, 0o644)
    other = aishell.make_dir(os.path.join(aishell.workdir, "store2"))
    os.chmod(other, 0o700)
    assert loaded_names(run_load(aishell, "-i", back, store=other)) == ["team/app:1"]
    assert index_digests(other) == first
    check_store(aishell, other)


@pytest.fixture
def podman(aishell, unpriv_user):
    """Rootless podman as the unprivileged user, with a private HOME, storage (vfs) and run dir
    (short: podman refuses a runroot longer than 50 characters)."""
    entry = users.check_unpriv_user(unpriv_user)
    home = os.path.join(aishell.workdir, "podman-home")
    run = tempfile.mkdtemp(prefix="aishell-podman-", dir="/tmp")
    for d in (home, run):
        os.makedirs(d, exist_ok=True)
        os.chown(d, entry.pw_uid, entry.pw_gid)
        os.chmod(d, 0o700)
    yield lambda *args: _podman(entry, home, run, *args)
    # podman's vfs storage holds files of the user's sub-ids: remove it as that user, in its namespace.
    subprocess.run(users.as_user_prefix(entry) + ["podman", "unshare", "rm", "-rf", os.path.join(home, "storage"),
                                                  os.path.join(run, "storage")],
                   env=_podman_env(entry, home, run), capture_output=True, cwd=home, timeout=120)
    shutil.rmtree(run, ignore_errors=True)


def _podman_env(entry, home, run):
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "XDG_RUNTIME_DIR": run,
            "USER": entry.pw_name, "LANG": "C.UTF-8"}


def _podman(unpriv_entry, home, run, *args):
    env = _podman_env(unpriv_entry, home, run)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "XDG_RUNTIME_DIR": run,
           "USER": unpriv_entry.pw_name, "LANG": "C.UTF-8"}
    cmd = users.as_user_prefix(unpriv_entry) + [
        "podman", "--storage-driver", "vfs", "--root", os.path.join(home, "storage"),
        "--runroot", os.path.join(run, "storage"), "--cgroup-manager", "cgroupfs", "--events-backend", "none",
        *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=home)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_saved_archive_loads(aishell, docker_images, podman, fmt):
    podman("load", "-i", docker_images.old_tar)
    out = os.path.join(aishell.workdir, f"podman-{fmt}.tar")
    podman("save", "--format", fmt, "-o", out, "load-app:1")
    # podman names what it loaded from Docker's archive localhost/...
    assert loaded_names(run_load(aishell, "-i", out)) == ["localhost/load-app:1"]
    info = inspect(aishell, "localhost/load-app:1")
    if fmt == "docker-archive":
        assert info["Id"] == docker_images.inspect["load-app:1"]["id"]
    else:  # containers/image converts the config to OCI's for an oci-archive: the archive's own
        assert info["Digest"] == oci_archive_manifests(out)[0]["digest"]
    assert [l["diffID"] for l in info["Layers"]] == docker_images.inspect["load-app:1"]["diff_ids"]
    check_runs(aishell, "localhost/load-app:1")


# --- refusals and hostile archives ------------------------------------------------------------

def test_refuses_a_terminal_and_the_chain_names(aishell, docker_images):
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(aishell.command(["load"], "unpriv"), env=aishell.env_for("unpriv"), stdin=slave,
                              capture_output=True, text=True, cwd=aishell.home, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert proc.stderr == ("aishell: error: load: refusing to read an image archive from a terminal (hint: aishell "
                           "load -i FILE, or pipe the archive in: aishell load < FILE)\n")
    members = [(i, d) for i, d in docker_images.members if i.name != "manifest.json"]
    members.append((file_info("manifest.json"), json.dumps([docker_images.app_entry()]).encode()))
    path = write_members(docker_images.path("app-only.tar"), members)
    aishell("images", user="unpriv")
    before = store_check.snapshot(aishell.store, ignore_top=("lock",))
    r = run_load(aishell, "-i", path, "--name", "aishell:base")
    assert r.returncode == 1
    assert r.stderr.startswith(f"aishell: error: load {path}: aishell:base belongs to aishell's image chain and "
                               "cannot be overwritten; ")
    assert store_check.snapshot(aishell.store, ignore_top=("lock",)) == before


def _replace(members, name, data=None, info=None):
    out = []
    for i, d in members:
        if i.name == name:
            if info is not None:
                out.append((info, data))
            elif data is not None:
                out.append((i, data))
        else:
            out.append((i, d))
    return out


def _plain_layer_name(images):
    """A <id>/layer.tar of the app image that is a file, not a link, and no link's target (the
    errors then name it, not a link to it)."""
    targets = {os.path.normpath(os.path.join(os.path.dirname(i.name), i.linkname))
               for i, _ in images.members if i.issym()}
    for path in images.app_entry()["Layers"]:
        if images.member(path)[0].isreg() and path not in targets:
            return path
    raise AssertionError("no plain layer.tar")


def _bad_archives(images):
    """name -> (members, expected error text after 'load PATH: ')."""
    m = images.members
    layer = _plain_layer_name(images)
    tampered = io.BytesIO(images.member(layer)[1])
    with tarfile.open(fileobj=tampered, mode="a") as tar:
        tar.addfile(file_info("planted"), io.BytesIO(b""))
    config_name = images.app_entry()["Config"]
    config = images.member(config_name)[1]
    oci, index = images.docker25(with_manifest=False)
    config_blob = "blobs/sha256/" + sha256(config)[7:]
    app_manifest = json.loads(next(d for i, d in oci if i.name == "blobs/sha256/" + index[0]["digest"][7:]))
    oci_layer = "blobs/sha256/" + app_manifest["layers"][-1]["digest"][7:]
    return {
        "dotdot": (m + [(file_info("../evil"), b"x")],
                   "archive member '../evil': member names with \"..\" are not allowed in an image archive"),
        "absolute": (m + [(file_info("/etc/evil"), b"x")],
                     "archive member '/etc/evil': absolute member names are not allowed in an image archive"),
        "duplicate": (m + [(file_info("manifest.json"), images.member("manifest.json")[1])],
                      "archive member 'manifest.json': the archive holds this member twice"),
        "symlink_out": (_replace(m, layer, None, link_info(layer, "../../../etc/passwd")),
                        f"symlink '{layer}' -> '../../../etc/passwd' points out of the archive"),
        "symlink_absolute": (_replace(m, layer, None, link_info(layer, "/etc/passwd")),
                             f"symlink '{layer}' -> '/etc/passwd' points out of the archive"),
        "symlink_loop": (_replace(m, layer, None, link_info(layer, "../loop/layer.tar")) +
                         [(link_info("loop/layer.tar", f"../{layer}"), None)],
                         "links (a loop)"),
        "layer_missing": ([x for x in m if x[0].name != layer],
                          f"'{layer}' is missing from the archive"),
        "layer_not_tar": (_replace(m, layer, b"this is not a tar archive\n" * 40), "not a tar archive"),
        "layer_tampered": (_replace(m, layer, tampered.getvalue()), "diff_id mismatch: the config says "),
        "config_name_digest": (_replace(m, config_name, config + b" "), "its name says sha256:"),
        "huge_manifest": (_replace(m, "manifest.json", b"[" + b" " * (5 << 20) + b"]"),
                          "archive member 'manifest.json': it is 5242882 bytes, over the limit of 4194304"),
        "oci_bad_digest": (_replace(oci, config_blob, config + b" "), "does not match its digest: its bytes hash to "),
        "oci_blob_missing": ([x for x in oci if x[0].name != oci_layer], "is missing from the archive"),
        "not_an_archive": (None, "read the archive: "),
    }


BAD_CASES = ["dotdot", "absolute", "duplicate", "symlink_out", "symlink_absolute", "symlink_loop", "layer_missing",
             "layer_not_tar", "layer_tampered", "config_name_digest", "huge_manifest", "oci_bad_digest",
             "oci_blob_missing", "not_an_archive"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_hostile_archive_fails_and_leaves_the_store_unchanged(aishell, docker_images, case):
    members, expected = _bad_archives(docker_images)[case]
    path = docker_images.path(f"bad-{case}.tar")
    if members is None:
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        os.chmod(path, 0o644)
    else:
        write_members(path, members)
    # A store with an image in it, so "unchanged" covers index.json and blobs, tmp/ and leases/.
    assert loaded_names(run_load(aishell, "-i", docker_images.old_tar))
    before = store_check.snapshot(aishell.store, ignore_top=("lock",))
    r = run_load(aishell, "-i", path)
    assert r.returncode == 1, r.stdout
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"aishell: error: load {path}: "), r.stderr
    assert expected in r.stderr, r.stderr
    assert store_check.snapshot(aishell.store, ignore_top=("lock",)) == before


# --- interrupted ------------------------------------------------------------------------------

def _pipe_unread(fd):
    """Bytes written to a pipe and not yet read (FIONREAD works on either end)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_sigint_while_reading_stdin_exits_130_and_leaves_the_store_unchanged(aishell, docker_images):
    # The archive comes through a pipe that stops in the middle of its largest blob and stays
    # open: aishell waits in read(2) for more. A Ctrl-C there stops the load (it did not before:
    # no watcher, so SIGINT's default action killed it and left its spool files in tmp/).
    members, _ = docker_images.docker25()
    path = docker_images.path("interrupted.tar")
    write_members(path, members)
    with tarfile.open(path) as tar:
        blob = max((m for m in tar.getmembers() if m.name.startswith("blobs/")), key=lambda m: m.size)
    with open(path, "rb") as f:
        prefix = f.read(blob.offset_data + blob.size // 2)
    assert loaded_names(run_load(aishell, "-i", docker_images.old_tar))
    before = store_check.snapshot(aishell.store, ignore_top=("lock",))
    index_before = store_check.read_index(aishell.store)

    read_end, write_end = os.pipe()
    proc = aishell.popen("load", user="unpriv", stdin=read_end)
    os.close(read_end)
    try:
        view = memoryview(prefix)
        while view:  # blocks while the pipe is full: aishell reads as it goes
            view = view[os.write(write_end, view):]
        deadline = time.monotonic() + 60
        while _pipe_unread(write_end) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition: every byte of the prefix read by aishell
        assert _pipe_unread(write_end) == 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(write_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    # One line, naming the member it stopped in.
    assert re.fullmatch(r"aishell: error: load from stdin: archive member 'blobs/sha256/[0-9a-f]{64}': "
                        r"interrupted by SIGINT; the store is unchanged\n", err), err
    assert store_check.read_index(aishell.store) == index_before
    assert store_check.diff_snapshots(before, store_check.snapshot(aishell.store, ignore_top=("lock",))) == ""
    check_store(aishell)
