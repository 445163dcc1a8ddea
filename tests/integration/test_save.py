"""aishell save: one tar that is an OCI layout and a Docker archive, read by the real tools.

- Docker 20.10 (the private `dockerd`): `docker load -i` of a multi-layer image aishell built
  (files added, one deleted in a later layer, ENV, WORKDIR, USER, CMD); `docker run` shows the
  files, the deleted one gone, and the config applied; the image ID Docker gives is aishell's
  config digest. A zstd image loads through the gzip copies the Docker side gets.
- podman, rootless (the unprivileged user with a private HOME and XDG dirs, vfs storage):
  `podman load`, then `podman image inspect` shows the config and `podman run` (runc) the
  files, the deleted one gone, and the config applied.
- skopeo: `inspect oci-archive:FILE` and `inspect docker-archive:FILE` both succeed.
- The tar: several images share blobs (each member once); `-o -` gives the same bytes as
  `-o FILE`; `--format oci` has no manifest.json, `--format docker` no index.json (and gzip
  copies of zstd layers); a save holds a lease on every blob it reads.
- Round trips: save then load into a fresh store (three images, zstd layers, `--format both`
  and `oci`) gives the same manifest digests; what Docker loaded from a save and then `docker
  save`d (its own old layout) loads into aishell and runs there.
- Errors: an unknown name lists the store's images; a terminal on stdout is refused; a save that
  fails midway (a damaged blob) leaves the file it was to replace untouched and no temp file.

Everything runs as the unprivileged user; images are built once per module on rt-busybox."""
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import termios
import time

import pytest

from helpers import users
from helpers.build import index_digest, make_context, manifest_and_config, module_runner
from helpers.checks import assert_one_error

DOCKERFILE = """\
FROM {base}
COPY a.txt b.txt /data/
RUN rm /data/b.txt && mkdir /work && echo made > /work/made.txt && chown 1234:1234 /work
ENV GREETING=hello-from-save
WORKDIR /work
USER 1234:1234
CMD ["sh", "-c", "echo cmd:$GREETING:$(pwd):$(id -u)"]
"""
ZSTD_DOCKERFILE = """\
FROM {base}
COPY z.txt /z.txt
RUN echo from-zstd-run > /run.txt
"""
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Python 3.10+ has it
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.fixture(scope="module")
def saved(session_dir, _binary_checked, unpriv_user, reg):
    """A runner whose store holds the base (pulled), save-test:1 and zstd-test:1 (built)."""
    runner = module_runner(session_dir, _binary_checked, unpriv_user, "save")
    base = f"{reg.host}/busybox:latest"
    runner("pull", base, user="unpriv")
    ctx = make_context(runner, {"Dockerfile": DOCKERFILE.format(base=base), "a.txt": "file a\n",
                                "b.txt": "file b\n"})
    runner("build", "-t", "save-test:1", ctx, user="unpriv", timeout=180)
    zctx = make_context(runner, {"Dockerfile": ZSTD_DOCKERFILE.format(base=base), "z.txt": "zstd file\n"},
                        name="zctx")
    runner("build", "--compression", "zstd", "-t", "zstd-test:1", zctx, user="unpriv", timeout=180)
    runner.base = base
    return runner


def save(runner, *args, check=True):
    return runner("save", *args, user="unpriv", check=check, timeout=300)


def out_dir(runner):
    return tempfile.mkdtemp(prefix="out-", dir=runner.make_dir(os.path.join(runner.workdir, "out")))


def save_file(runner, *args):
    d = out_dir(runner)
    users.chown_tree(d, runner.entry)
    path = os.path.join(d, "image.tar")
    r = save(runner, *args, "-o", path)
    return path, r


def fresh_store(runner):
    """An empty store dir of the unprivileged user's (another store than the module's)."""
    return runner.make_dir(tempfile.mkdtemp(prefix="store-", dir=runner.workdir))


def members(path):
    with tarfile.open(path) as t:
        return [m.name for m in t.getmembers()]


def read_member(path, name):
    with tarfile.open(path) as t:
        return t.extractfile(name).read()


def config_digest(runner, name):
    return manifest_and_config(runner.store, name)[0]["config"]["digest"]


def manifest_digest(runner, name):
    return index_digest(runner.store, name)


# --- Docker ----------------------------------------------------------------------------------

def test_docker_loads_and_runs_the_saved_image(saved, dockerd):
    path, _ = save_file(saved, "save-test:1")
    r = dockerd.docker("load", "-i", path)
    assert "Loaded image: save-test:1" in r.stdout, r.stdout
    image_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", "save-test:1").stdout.strip()
    assert image_id == config_digest(saved, "save-test:1")
    # CMD, ENV, WORKDIR and USER as the config says.
    r = dockerd.docker("run", "--rm", "--network", "none", "save-test:1")
    assert r.stdout == "cmd:hello-from-save:/work:1234\n", r.stdout + r.stderr
    # The files of every layer; the one a later layer deleted is gone.
    r = dockerd.docker("run", "--rm", "--network", "none", "save-test:1", "sh", "-c",
                       "cat /data/a.txt /work/made.txt; test -e /data/b.txt || echo b-gone; id -g")
    assert r.stdout == "file a\nmade\nb-gone\n1234\n", r.stdout + r.stderr
    dockerd.docker("rmi", "save-test:1")


def test_docker_loads_a_zstd_image_through_gzip_copies(saved, dockerd):
    path, r = save_file(saved, "zstd-test:1")
    notes = [line for line in r.stderr.splitlines() if "zstd layer" in line]
    assert len(notes) == 2 and all("to gzip for the Docker side" in n for n in notes), r.stderr
    # The OCI side keeps the zstd blobs as they are; the Docker side names gzip copies.
    index = json.loads(read_member(path, "index.json"))
    manifest = json.loads(read_member(path, "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    zstd = [d["digest"] for d in manifest["layers"] if d["mediaType"] == ZSTD_LAYER]
    assert len(zstd) == 2
    docker_side = json.loads(read_member(path, "manifest.json"))[0]["Layers"]
    names = set(members(path))
    assert all("blobs/sha256/" + d[7:] in names for d in zstd)
    assert not {"blobs/sha256/" + d[7:] for d in zstd} & set(docker_side)
    for layer in docker_side[-2:]:
        assert read_member(path, layer)[:2] == b"\x1f\x8b", "not a gzip member"

    dockerd.docker("load", "-i", path)
    r = dockerd.docker("run", "--rm", "--network", "none", "zstd-test:1", "cat", "/z.txt", "/run.txt")
    assert r.stdout == "zstd file\nfrom-zstd-run\n", r.stdout + r.stderr
    dockerd.docker("rmi", "zstd-test:1")


def test_docker_saves_what_it_loaded_and_aishell_loads_and_runs_it(saved, dockerd):
    # aishell -> docker load -> docker save (Docker 20.10's own layout: <id>/layer.tar, no
    # compression) -> aishell load into a fresh store: the same image, and it runs.
    path, _ = save_file(saved, "save-test:1")
    dockerd.docker("load", "-i", path)
    back = os.path.join(out_dir(saved), "docker-saved.tar")
    try:
        dockerd.docker("save", "-o", back, "save-test:1")
    finally:
        dockerd.docker("rmi", "save-test:1")
    users.chown_tree(os.path.dirname(back), saved.entry)
    assert "manifest.json" in members(back) and "index.json" not in members(back)
    store = fresh_store(saved)
    r = saved("load", "-i", back, user="unpriv", env={"AISHELL_STORE": store})
    assert r.stdout == "Loaded image: save-test:1\n", r.stdout + r.stderr
    # Docker kept the config's bytes (the image ID) and the layers' contents (the diff_ids).
    _, config = manifest_and_config(saved.store, "save-test:1")
    manifest, loaded_config = manifest_and_config(store, "save-test:1")
    assert manifest["config"]["digest"] == config_digest(saved, "save-test:1")
    assert loaded_config["rootfs"]["diff_ids"] == config["rootfs"]["diff_ids"]
    r = saved("exec", "--image", "save-test:1", "--", "sh", "-c",
              "cat /data/a.txt /work/made.txt; test -e /data/b.txt || echo b-gone; echo $GREETING; pwd",
              user="unpriv", env={"AISHELL_STORE": store}, cwd="/", timeout=180)
    assert r.stdout == "file a\nmade\nb-gone\nhello-from-save\n/work\n", r.stdout + r.stderr


# --- podman and skopeo -----------------------------------------------------------------------

def podman(runner, home, *args):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "XDG_RUNTIME_DIR": f"{home}/run",
           "XDG_CONFIG_HOME": f"{home}/config", "XDG_DATA_HOME": f"{home}/data", "LANG": "C.UTF-8"}
    cmd = users.as_user_prefix(runner.entry) + [
        "podman", "--root", f"{home}/storage", "--runroot", f"{home}/run/s", "--storage-driver", "vfs",
        "--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=home)


def test_podman_loads_the_saved_image_rootless(saved):
    path, _ = save_file(saved, "save-test:1")
    # A short path: podman refuses a runroot longer than 50 characters.
    home = saved.make_dir(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))
    for sub in ("run", "config", "data"):
        saved.make_dir(os.path.join(home, sub))
    os.chmod(os.path.join(home, "run"), 0o700)
    try:
        r = podman(saved, home, "load", "-i", path)
        assert r.returncode == 0, r.stdout + r.stderr
        # podman 4.3 reads the OCI side and names the image from ref.name, which Docker 25's
        # layout gives the tag only (newer podman reads io.containerd.image.name): the image is
        # checked by its ID, which is aishell's config digest either way.
        assert "Loaded image" in r.stdout, r.stdout
        image_id = config_digest(saved, "save-test:1")[7:]
        r = podman(saved, home, "image", "inspect", image_id)
        assert r.returncode == 0, r.stderr
        inspected = json.loads(r.stdout)[0]
        assert inspected["Id"] == image_id
        config = inspected["Config"]
        assert "GREETING=hello-from-save" in config["Env"]
        assert (config["WorkingDir"], config["User"]) == ("/work", "1234:1234")
        assert config["Cmd"] == ["sh", "-c", "echo cmd:$GREETING:$(pwd):$(id -u)"]
        # And it runs: the config applied, every layer's files, the deleted one gone.
        r = podman(saved, home, "run", "--rm", "--network", "none", image_id)
        assert r.stdout == "cmd:hello-from-save:/work:1234\n", r.stdout + r.stderr
        r = podman(saved, home, "run", "--rm", "--network", "none", image_id, "sh", "-c",
                   "cat /data/a.txt /work/made.txt; test -e /data/b.txt || echo b-gone")
        assert r.stdout == "file a\nmade\nb-gone\n", r.stdout + r.stderr
    finally:
        podman(saved, home, "system", "reset", "--force")
        shutil.rmtree(home, ignore_errors=True)


def test_skopeo_reads_both_sides(saved):
    path, _ = save_file(saved, "save-test:1")
    config = config_digest(saved, "save-test:1")
    for transport in ("oci-archive", "docker-archive"):
        r = subprocess.run(["skopeo", "inspect", "--config", f"{transport}:{path}"], capture_output=True,
                           text=True)
        assert r.returncode == 0, f"{transport}: {r.stderr}"
        assert json.loads(r.stdout)["config"]["Env"][-1] == "GREETING=hello-from-save"
    # The OCI side is the store's manifest as it is: the same layer digests.
    r = subprocess.run(["skopeo", "inspect", f"oci-archive:{path}"], capture_output=True, text=True, check=True)
    manifest, _ = manifest_and_config(saved.store, "save-test:1")
    assert json.loads(r.stdout)["Layers"] == [d["digest"] for d in manifest["layers"]]
    assert json.loads(r.stdout)["Digest"] == manifest_digest(saved, "save-test:1")
    r = subprocess.run(["skopeo", "inspect", "--raw", f"docker-archive:{path}"], capture_output=True, text=True,
                       check=True)
    assert json.loads(r.stdout)["config"]["digest"] == config


# --- the tar ---------------------------------------------------------------------------------

def test_two_images_share_blobs_and_name_both(saved):
    path, _ = save_file(saved, "save-test:1", saved.base)
    names = members(path)
    assert len(names) == len(set(names)), "a member twice"
    base_manifest, _ = manifest_and_config(saved.store, saved.base)
    image_manifest, _ = manifest_and_config(saved.store, "save-test:1")
    base_layers = {d["digest"] for d in base_manifest["layers"]}
    assert base_layers <= {d["digest"] for d in image_manifest["layers"]}
    for digest in base_layers:
        assert names.count("blobs/sha256/" + digest[7:]) == 1
    items = json.loads(read_member(path, "manifest.json"))
    host = saved.base.rsplit("/", 1)[0]
    assert sorted(t for i in items for t in i["RepoTags"]) == sorted(["save-test:1", f"{host}/busybox:latest"])
    index = json.loads(read_member(path, "index.json"))
    assert sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"]) == sorted(
        ["docker.io/library/save-test:1", f"{host}/busybox:latest"])
    assert sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]) == ["1", "latest"]
    assert read_member(path, "oci-layout") == b'{"imageLayoutVersion": "1.0.0"}'
    assert json.loads(read_member(path, "repositories"))["save-test"].keys() == {"1"}


def test_stdout_gives_the_same_bytes_as_a_file(saved):
    path, _ = save_file(saved, "save-test:1")
    r = saved.command(["save", "save-test:1", "-o", "-"], "unpriv")
    out = subprocess.run(r, env=saved.env_for("unpriv"), capture_output=True, timeout=300, cwd=saved.home)
    assert out.returncode == 0, out.stderr
    with open(path, "rb") as f:
        assert out.stdout == f.read()


def test_format_oci_has_no_docker_side(saved):
    path, r = save_file(saved, "zstd-test:1", "--format", "oci")
    assert "zstd layer" not in r.stderr, "nothing is converted for an OCI-only archive"
    names = members(path)
    assert "manifest.json" not in names and "repositories" not in names
    assert {"oci-layout", "index.json"} <= set(names)
    manifest, _ = manifest_and_config(saved.store, "zstd-test:1")
    wanted = {manifest_digest(saved, "zstd-test:1"), manifest["config"]["digest"]}
    wanted |= {d["digest"] for d in manifest["layers"]}
    assert {n for n in names if n.startswith("blobs/sha256/") and len(n) == 77} == {
        "blobs/sha256/" + d[7:] for d in wanted}
    subprocess.run(["skopeo", "inspect", f"oci-archive:{path}"], capture_output=True, check=True)


def test_format_docker_has_no_oci_side(saved):
    # Only manifest.json, repositories and the blobs it names: the zstd layers' gzip copies in
    # place of the zstd blobs, and no manifest (a Docker archive has none).
    path, r = save_file(saved, "zstd-test:1", "--format", "docker")
    assert sum("to gzip for the Docker side" in line for line in r.stderr.splitlines()) == 2, r.stderr
    names = members(path)
    assert "index.json" not in names and "oci-layout" not in names
    manifest, _ = manifest_and_config(saved.store, "zstd-test:1")
    item = json.loads(read_member(path, "manifest.json"))[0]
    assert item["RepoTags"] == ["zstd-test:1"]
    assert item["Config"] == "blobs/sha256/" + manifest["config"]["digest"][7:]
    blobs = {n for n in names if n.startswith("blobs/sha256/") and len(n) == 77}
    assert blobs == {item["Config"], *item["Layers"]}
    assert not {"blobs/sha256/" + d["digest"][7:] for d in manifest["layers"] if d["mediaType"] == ZSTD_LAYER} & blobs
    r = subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{path}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_save_leases_the_blobs_it_reads(saved):
    """While the save waits to open its output (a FIFO nobody reads yet), its lease names the
    manifest, the config and every layer: a prune running then keeps them."""
    d = out_dir(saved)
    users.chown_tree(d, saved.entry)
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    os.chown(fifo, saved.entry.pw_uid, saved.entry.pw_gid)
    proc = saved.popen("save", "save-test:1", "-o", fifo, user="unpriv")
    try:
        manifest, _ = manifest_and_config(saved.store, "save-test:1")
        wanted = {f"use blob {manifest_digest(saved, 'save-test:1')}", f"use blob {manifest['config']['digest']}"}
        wanted |= {f"use blob {l['digest']}" for l in manifest["layers"]}
        leases = os.path.join(saved.store, "leases")
        lines = set()
        deadline = time.monotonic() + 60
        while not wanted <= lines and time.monotonic() < deadline and proc.poll() is None:
            lines = set()
            for name in os.listdir(leases):
                with open(os.path.join(leases, name)) as f:
                    text = f.read()
                if text.startswith("aishell-lease 1 save"):
                    lines |= set(text.splitlines())
            time.sleep(0.05)
        assert wanted <= lines, lines
    finally:
        with open(fifo, "rb") as f:  # lets the save finish
            data = f.read()
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert "manifest.json" in t.getnames()
    assert not [n for n in os.listdir(os.path.join(saved.store, "leases")) if not n.startswith(".")]


@pytest.mark.parametrize("fmt", ["both", "oci"])
def test_save_then_load_into_a_fresh_store_keeps_manifest_digests(saved, fmt):
    # Three images in one file, one with zstd layers: the load takes the OCI side (the only one
    # with --format oci), so every manifest, and so every digest, comes back as it was.
    names = ["save-test:1", "zstd-test:1", saved.base]
    path, _ = save_file(saved, *names, "--format", fmt)
    store = fresh_store(saved)
    r = saved("load", "-i", path, user="unpriv", env={"AISHELL_STORE": store})
    # Names come from RepoTags when there is a Docker side, else from io.containerd.image.name:
    # the normalized reference, which `--image save-test:1` finds too (cli/image_lookup.hpp).
    loaded = {n: (n if fmt == "both" or "/" in n else "docker.io/library/" + n) for n in names}
    assert sorted(r.stdout.splitlines()) == sorted(f"Loaded image: {n}" for n in loaded.values()), r.stdout
    for name, as_loaded in loaded.items():
        assert index_digest(store, as_loaded) == manifest_digest(saved, name), name
    zstd, _ = manifest_and_config(store, loaded["zstd-test:1"])
    assert [l["mediaType"] for l in zstd["layers"]][-2:] == [ZSTD_LAYER, ZSTD_LAYER]


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(saved):
    # A copy of the store with the top layer of save-test:1 damaged: the save stops at that
    # blob; -o FILE went to a temp file beside FILE, which is removed, and FILE is untouched.
    store = fresh_store(saved)
    shutil.copytree(os.path.join(saved.store, "oci"), os.path.join(store, "oci"), symlinks=True)
    users.chown_tree(store, saved.entry)
    manifest, _ = manifest_and_config(store, "save-test:1")
    top = os.path.join(store, "oci", "blobs", "sha256", manifest["layers"][-1]["digest"][7:])
    with open(top, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    d = out_dir(saved)
    target = os.path.join(d, "image.tar")
    with open(target, "w") as f:
        f.write("the previous archive\n")
    users.chown_tree(d, saved.entry)
    r = saved("save", "save-test:1", "-o", target, user="unpriv", env={"AISHELL_STORE": store}, check=False)
    assert r.returncode == 1
    line = assert_one_error(r)
    assert manifest["layers"][-1]["digest"] in line and "does not match its digest" in line, line
    assert os.listdir(d) == ["image.tar"]
    with open(target) as f:
        assert f.read() == "the previous archive\n"


# --- errors ----------------------------------------------------------------------------------

def test_unknown_image_lists_the_store(saved):
    d = out_dir(saved)
    users.chown_tree(d, saved.entry)
    r = save(saved, "nosuch:1", "-o", os.path.join(d, "x.tar"), check=False)
    assert r.returncode == 1
    line = assert_one_error(r)
    assert "save: no such image in the store: nosuch:1" in line, line
    assert "save-test:1" in line and "zstd-test:1" in line, line
    assert os.listdir(d) == [], "a failed save left a file"


def test_a_terminal_on_stdout_is_refused(saved):
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(saved.command(["save", "save-test:1"], "unpriv"), env=saved.env_for("unpriv"),
                              stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60, cwd=saved.home)
    finally:
        os.close(follower)
        os.close(leader)
    proc.stdout = ""  # it went to the terminal
    assert proc.returncode == 1
    line = assert_one_error(proc)
    assert "refusing to write a tar archive to a terminal" in line, line


# --- interrupted -----------------------------------------------------------------------------

def test_sigint_while_stdout_is_blocked_exits_130(saved):
    # -o - into a pipe nobody reads: once the pipe is full the save waits for room. A Ctrl-C
    # there stops it (before, it waited in write(2) with the signal held, for as long as the
    # reader did not read). stdout is never drained here: draining would let it go on.
    read_end, write_end = os.pipe()
    capacity = fcntl.fcntl(read_end, F_GETPIPE_SZ)
    proc = saved.popen("save", "save-test:1", "-o", "-", user="unpriv", stdout=write_end)
    os.close(write_end)
    try:
        while _pipe_unread(read_end) < capacity and proc.poll() is None:
            select.select([], [], [], 0.01)  # polling a condition: the pipe full
        assert proc.poll() is None, "the save ended before filling the pipe"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # without the fix: still blocked, TimeoutExpired
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
    assert proc.returncode == 130, err
    assert re.fullmatch(r"aishell: error: save: (blob sha256:[0-9a-f]{64}: )?interrupted by SIGINT\n", err), err


def _sigint_pending():
    """preexec_fn: SIGINT blocked and pending in the child, as if Ctrl-C came at its start; a
    pending signal survives execve(2), so aishell's first checkpoint takes it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)


def test_sigint_during_a_save_to_a_file_leaves_the_old_file_and_no_temp_file(saved):
    d = out_dir(saved)
    target = os.path.join(d, "image.tar")
    with open(target, "w") as f:
        f.write("the previous archive\n")
    users.chown_tree(d, saved.entry)
    proc = saved.popen("save", "save-test:1", "-o", target, user="unpriv", preexec_fn=_sigint_pending)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert out == ""
    assert re.fullmatch(r"aishell: error: save: blob sha256:[0-9a-f]{64}: interrupted by SIGINT\n", err), err
    assert os.listdir(d) == ["image.tar"]  # the temp file the tar had begun in is gone
    with open(target) as f:
        assert f.read() == "the previous archive\n"


def _pipe_unread(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
