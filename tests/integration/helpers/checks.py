"""Assertions shared by the pull tests: error output, independent inspection of pulled images."""
import json
import os
import re
import subprocess

from .store import diff_snapshots, image_names, read_blob, snapshot, verify_store
from .util import run

ERROR_PREFIX = "aishell: error:"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def assert_one_error(proc, pattern=None):
    """Non-zero exit and exactly one `aishell: error:` line (matching pattern, case-insensitive).
    Returns that line."""
    shown = f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode != 0, f"expected failure, got success\n{shown}"
    assert proc.returncode > 0, f"aishell died by a signal\n{shown}"
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, f"expected exactly one '{ERROR_PREFIX}' line\n{shown}"
    if pattern is not None:
        assert re.search(pattern, lines[0], re.IGNORECASE), \
            f"error line does not match /{pattern}/: {lines[0]!r}\n{shown}"
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr, shown
    return lines[0]


def assert_store_unchanged(store, before):
    """index.json, blobs/ and everything else but tmp/ exactly as before; every image verifies."""
    after = snapshot(store)
    diff = diff_snapshots(before, after)
    assert not diff, f"the store changed:\n{diff}"
    problems = verify_store(store)
    assert not problems, "store does not verify:\n" + "\n".join(problems)


def entry(store, name):
    names = image_names(store)
    assert name in names, f"{name!r} not in the store's index.json (names: {sorted(names)})"
    return names[name]


def skopeo_inspect(store, name):
    """skopeo's view of a stored image (reads the OCI layout directly)."""
    return json.loads(run(["skopeo", "inspect", f"oci:{store}/oci:{name}"]).stdout)


def umoci_unpack(store, name, bundle):
    run(["umoci", "unpack", "--rootless", "--image", f"{store}/oci:{name}", str(bundle)])
    return os.path.join(str(bundle), "rootfs")


def assert_pulled(store, name, expected_digest, media_type=OCI_MANIFEST, tmp_path=None):
    """The store names `name` -> expected_digest, byte for byte; independent tools agree."""
    desc = entry(store, name)
    assert desc["digest"] == expected_digest
    assert desc["mediaType"] == media_type
    raw = read_blob(store, expected_digest)
    assert len(raw) == desc["size"]
    problems = verify_store(store)
    assert not problems, "\n".join(problems)
    if media_type == OCI_MANIFEST:
        info = skopeo_inspect(store, name)
        assert info["Digest"] == expected_digest
        if tmp_path is not None:
            rootfs = umoci_unpack(store, name, tmp_path / "bundle")
            assert os.path.islink(os.path.join(rootfs, "bin", "sh"))
            assert os.path.isfile(os.path.join(rootfs, "bin", "busybox"))
    return json.loads(raw)


def wait_for(predicate, timeout=20.0, interval=0.02, what="condition"):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def largest_layer(manifest):
    return max(manifest["layers"], key=lambda d: d["size"])


def sha256sum_matches(path, digest):
    out = subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True).stdout
    return "sha256:" + out.split()[0] == digest
