"""The pull command's surface beyond the registry protocol: the Docker Hub mirror (flag and
environment), --store versus AISHELL_STORE, --version, size caps on what a registry sends
back, and the local-name-first lookup."""
import json
import os
import re

from helpers.checks import assert_one_error, assert_pulled, entry
from helpers.store import image_names, snapshot, diff_snapshots


def test_version(aishell):
    out = aishell("--version", user="unpriv").stdout
    assert re.match(r"^aishell \d+\.\d+\.\d+", out), out


def test_docker_hub_reference_comes_from_the_mirror_flag(aishell, registry, images):
    mirror = registry("http")
    images.push(images.busybox, mirror, "library/busybox:1")
    aishell("pull", "--registry-mirror", mirror.host, "busybox:1", user="unpriv",
            env={"AISHELL_REGISTRY_MIRROR": None})
    assert_pulled(aishell.store, "docker.io/library/busybox:1",
                  images.manifest_digest(images.busybox))


def test_docker_hub_reference_comes_from_the_mirror_env(aishell, registry, images):
    mirror = registry("http")
    images.push(images.hello, mirror, "team/hello:2")
    aishell("pull", "team/hello:2", user="unpriv",
            env={"AISHELL_REGISTRY_MIRROR": f"http://{mirror.host}"})
    assert entry(aishell.store, "docker.io/team/hello:2")["digest"] == \
        images.manifest_digest(images.hello)


def test_mirror_miss_falls_back_to_the_origin(aishell, registry):
    """The mirror lacks the image, so the origin (Docker Hub, unreachable from the test
    machine or not) is tried next: the error is about the origin, after a note about the
    mirror, and the store is untouched."""
    mirror = registry("http")
    proc = aishell("pull", "library/not-in-mirror:1", user="unpriv", check=False,
                   env={"AISHELL_REGISTRY_MIRROR": mirror.host}, timeout=180)
    assert proc.returncode != 0
    assert f"mirror {mirror.host} failed" in proc.stderr
    assert "registry-1.docker.io" in proc.stderr or "docker.io" in proc.stderr
    assert not os.path.exists(os.path.join(aishell.store, "oci", "index.json")) or \
        image_names(aishell.store) == {}


def test_store_flag_wins_over_the_environment(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.hello, reg, "lib/hello:1")
    other = os.path.join(aishell.workdir, "other-store")
    aishell("--store", other, "pull", ref, user="unpriv")
    assert ref in image_names(other)
    assert not os.path.exists(os.path.join(aishell.store, "oci", "index.json")) or \
        image_names(aishell.store) == {}


def test_error_body_over_the_cap_is_refused(aishell, fake_registry):
    fake = fake_registry()
    fake.add("/v2/big/error/manifests/1", b"x" * (3 * 1024 * 1024), status=500)
    proc = aishell("pull", f"{fake.host}/big/error:1", user="unpriv", check=False)
    assert_one_error(proc, r"limit|500")
    assert len(proc.stderr) < 4096, "an error body is never dumped whole"


def test_oversized_manifest_is_refused(aishell, fake_registry):
    fake = fake_registry()
    body = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "0" * 64, "size": 2},
                       "layers": [], "annotations": {"pad": "y" * (5 * 1024 * 1024)}})
    fake.add_manifest("huge/manifest", "1", body, "application/vnd.oci.image.manifest.v1+json")
    proc = aishell("pull", f"{fake.host}/huge/manifest:1", user="unpriv", check=False)
    assert_one_error(proc, r"limit|too large|exceeds|4 MiB|4194304")


def test_local_name_is_found_before_normalization(aishell, registry, images):
    """`busybox` names docker.io/library/busybox:latest only when nothing is stored as `busybox`."""
    reg = registry("http")
    ref = images.push(images.hello, reg, "lib/hello:1")
    aishell("pull", ref, user="unpriv")
    before = snapshot(aishell.store)
    info = json.loads(aishell("inspect", ref, user="unpriv").stdout)
    assert info["Digest"] == images.manifest_digest(images.hello)
    proc = aishell("inspect", "hello", user="unpriv", check=False)
    assert_one_error(proc, r"hello")
    assert diff_snapshots(before, snapshot(aishell.store)) == ""


def _pull_on_a_pty(aishell, ref, extra_env):
    """Runs the pull with stderr on a pseudo-terminal and returns what it drew there."""
    import pty
    import subprocess
    master, slave = pty.openpty()
    env = {"PATH": "/usr/bin:/bin", "HOME": aishell.home, "AISHELL_STORE": aishell.store,
           "TERM": "xterm", **extra_env}
    proc = subprocess.Popen([aishell.binary, "pull", ref], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return drawn.decode(errors="replace")


def test_progress_on_a_terminal_draws_one_bar_per_layer(aishell, registry, images, fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.throttle(1_500_000)  # slow enough for bars with a rate to be drawn
    drawn = _pull_on_a_pty(aishell, f"{proxy.host}/lib/busybox:1", {})
    manifest = json.loads(reg.get_manifest("lib/busybox", "1")[0])
    for layer in manifest["layers"]:
        assert layer["digest"][:19] in drawn, "a row per layer"
    assert "\x1b[" in drawn and "\r" in drawn, "bars are redrawn in place"
    assert re.search(r"\[=+>? *\]", drawn), "a bar"
    assert re.search(r"\d+(\.\d+)? ?[kMGT]?B/s", drawn), "a transfer rate"
    assert "\x1b[32m" in drawn, "finished rows in colour on a terminal"


def test_progress_honours_no_color(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.hello, reg, "lib/hello:1")
    drawn = _pull_on_a_pty(aishell, ref, {"NO_COLOR": "1"})
    assert "\x1b[32m" not in drawn
    assert "\r" in drawn
