"""Memory bounds of the ways in and out (issue 9: "a 2 GB image saves under 64 MB RSS").

An image whose one layer is a tar of a 300 MB file of random bytes (helpers/big_image.py, made
once and cached with the other fixtures) is loaded from an OCI archive, saved to a file and
pushed to a loopback registry, each as the unprivileged user. Each command's peak resident set stays under 64 MB:
blobs stream through fixed buffers, so the peak does not grow with the image; a command holding
a layer in memory would need more than 300 MB. A resource bound, not a timing. The 2 GB figures
are in docs/performance.md.

The peak is GNU time's %M (the ru_maxrss wait4 gives it for its child), not the ru_maxrss of a
wait4 here: Linux keeps the high-water mark across execve (getrusage(2)), so a child forked or
vforked by pytest reports pytest's own peak if that is higher."""
import os
import subprocess
import tarfile
import tempfile

import pytest

from helpers.big_image import cached_big_archive
from helpers.build import index_digest, module_runner

# The sanitizer build (AISHELL_SANITIZER_LOG_DIR set by scripts/test) adds shadow memory and a
# quarantine of freed blocks (114-119 MiB measured here); its bound still catches a whole
# 300 MB layer held in memory.
LIMIT_KIB = (192 if os.environ.get("AISHELL_SANITIZER_LOG_DIR") else 64) * 1024
TIME = "/usr/bin/time"  # GNU time (Debian's `time`), installed by scripts/test
SIZE = 300 * 1000 * 1000


def measured(runner, *args):
    """(exit code, peak RSS in KiB, stderr) of aishell ARGS as the unprivileged user, measured
    by GNU time, which forks it from its own small process."""
    with tempfile.NamedTemporaryFile(prefix="maxrss-") as rss:
        cmd = [TIME, "-q", "-f", "%M", "-o", rss.name, *runner.command(args, "unpriv")]
        proc = subprocess.run(cmd, env=runner.env_for("unpriv"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, cwd=runner.home, timeout=600)
        peak = int(rss.read().split()[-1])
    return proc.returncode, peak, proc.stderr


@pytest.fixture(scope="module")
def big(session_dir, _binary_checked, unpriv_user):
    """(runner, name, manifest digest, peak RSS of the load): the image loaded into runner.store."""
    runner = module_runner(session_dir, _binary_checked, unpriv_user, "memory")
    archive, name, digest = cached_big_archive(SIZE)
    code, rss, err = measured(runner, "load", "-i", archive)
    assert code == 0, err
    return runner, name, digest, rss


def test_load_stays_under_64mb(big):
    runner, name, digest, rss = big
    assert index_digest(runner.store, name) == digest
    assert rss < LIMIT_KIB, f"aishell load peaked at {rss // 1024} MiB"


def test_save_stays_under_64mb(big):
    runner, name, digest, _ = big
    out = os.path.join(runner.make_dir(os.path.join(runner.workdir, "out")), "big-saved.tar")
    try:
        code, rss, err = measured(runner, "save", name, "-o", out)
        assert code == 0, err
        assert rss < LIMIT_KIB, f"aishell save peaked at {rss // 1024} MiB"
        with tarfile.open(out) as tar:  # headers only: the members are skipped over, not read
            sizes = {m.name: m.size for m in tar.getmembers()}
        assert sizes["blobs/sha256/" + digest[7:]] > 0
        assert max(sizes.values()) > SIZE
    finally:
        if os.path.exists(out):
            os.unlink(out)


def test_push_stays_under_64mb(big, registry):
    runner, name, digest, _ = big
    reg = registry("http")
    code, rss, err = measured(runner, "push", name, f"{reg.host}/team/big:1")
    assert code == 0, err
    assert rss < LIMIT_KIB, f"aishell push peaked at {rss // 1024} MiB"
    assert reg.get_manifest("team/big", "1")[1] == digest
