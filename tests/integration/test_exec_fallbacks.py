"""aishell exec when kernel features are missing: helpers/enosys.c makes chosen system calls fail
with ENOSYS (a seccomp filter loaded as root, then the unprivileged user), as crun's tests do.
  openat2        -> paths resolved by the userspace walk of common/resolve_path.hpp (symlinks in root)
  fsopen         -> overlay by mount(2) with lowerdirs relative to layers/ (page-size limit)
  mount_setattr  -> read-only binds by MS_REMOUNT
  close_range    -> fds marked close-on-exec one by one
  TIOCGPTPEER    -> (ENOTTY, before Linux 4.13) the -t pty's peer opened as /dev/pts/N (TIOCGPTN)
Unpacking (src/oci) also runs under the wrapper here, so its openat2 fallback is exercised."""
import os
import re
import subprocess

import pytest

from helpers.runtime_images import MANY_LAYERS

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def enosys(session_dir):
    path = os.path.join(session_dir, "enosys")
    subprocess.run(["cc", "-O2", "-o", path, os.path.join(HERE, "helpers", "enosys.c")], check=True)
    os.chmod(path, 0o755)
    return path


def run_without(aishell, enosys, syscalls, image, *cmd, mode="subuid", opts=()):
    """aishell exec as the unprivileged user with `syscalls` failing with ENOSYS."""
    e = aishell.entry
    argv = [enosys, str(e.pw_uid), str(e.pw_gid), ",".join(syscalls), "--", aishell.binary,
            "exec", "--image", image, *opts, "--", *cmd]
    return subprocess.run(argv, env=aishell.env_for("unpriv", {"AISHELL_USERNS": mode}),
                          capture_output=True, text=True, timeout=120, cwd=aishell.home)


def overlay_options(mountinfo):
    line = next(l for l in mountinfo.splitlines() if " / / " in l and " - overlay " in l)
    return line.split(" - overlay ", 1)[1]


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_everything_missing_still_runs(aishell, enosys, pulled, mode):
    image = pulled("busybox")
    r = run_without(aishell, enosys, ["openat2", "fsopen", "mount_setattr", "close_range", "clone3"],
                    image, "sh", "-c", "id -u; echo fds: $(ls /proc/self/fd); cat /etc/passwd | head -1",
                    mode=mode)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0"
    fds = lines[1].split()[1:]
    assert fds[:3] == ["0", "1", "2"] and len(fds) <= 4, fds  # only ls's own dir beyond stdio
    assert lines[2].startswith("root:x:0:0:")


def test_overlay_without_lowerdir_plus_uses_relative_paths(aishell, enosys, pulled):
    image = pulled("many")
    script = "cat /proc/self/mountinfo; echo layers: $(ls /layers | wc -l)"
    new = run_without(aishell, enosys, [], image, "sh", "-c", script)
    assert new.returncode == 0, new.stderr
    opts = overlay_options(new.stdout)
    assert opts.count("lowerdir+=") == MANY_LAYERS + 2
    old = run_without(aishell, enosys, ["fsopen"], image, "sh", "-c", script)
    assert old.returncode == 0, old.stderr
    assert f"layers: {MANY_LAYERS}" in old.stdout
    opts = overlay_options(old.stdout)
    assert "lowerdir+=" not in opts
    lower = opts.split("lowerdir=", 1)[1].split(",", 1)[0].split(":")
    # With absolute paths these 57 layers would not fit in the page mount(2) accepts.
    assert len(lower) == MANY_LAYERS + 2
    assert all(len(name) == 64 and "/" not in name for name in lower), lower[:3]
    absolute = sum(len(os.path.join(aishell.store, "layers", n)) + 1 for n in lower)
    assert absolute > os.sysconf("SC_PAGE_SIZE")


def test_read_only_bind_without_mount_setattr(aishell, enosys, pulled):
    image = pulled("busybox")
    d = aishell.make_dir(os.path.join(aishell.workdir, "ro"))
    with open(os.path.join(d, "f"), "w") as f:
        f.write("data\n")
    for missing in ([], ["mount_setattr"]):
        r = run_without(aishell, enosys, missing, image, "sh", "-c",
                        "cat /ro/f; touch /ro/new 2>&1 || echo refused", opts=("-v", f"{d}:/ro:ro"))
        assert r.returncode == 0, (missing, r.stderr)
        assert r.stdout.splitlines()[0] == "data"
        assert r.stdout.splitlines()[-1] == "refused", (missing, r.stdout)
    assert not os.path.exists(os.path.join(d, "new"))


def test_mount_target_through_a_symlink_without_openat2(aishell, enosys, pulled):
    """/lib -> usr/lib in the image: openat2 resolves it inside the rootfs, and so does the
    resolver's fallback walk (common/resolve_path.hpp) when openat2 fails with ENOSYS: the same
    bind lands in the same place either way (the walk refused every symlink before)."""
    image = pulled("sudo")
    d = aishell.make_dir(os.path.join(aishell.workdir, "probe"))
    with open(os.path.join(d, "f"), "w") as f:
        f.write("probe\n")
    for missing in ([], ["openat2"]):
        for target in ("/lib/probe", "/usr/lib/probe"):
            r = run_without(aishell, enosys, missing, image, "cat", "/usr/lib/probe/f", opts=("-v", f"{d}:{target}"))
            assert r.returncode == 0, (missing, target, r.stderr)
            assert r.stdout == "probe\n"


def test_terminal_without_tiocgptpeer_opens_the_peer_by_its_number(aishell, enosys, pulled):
    """Before Linux 4.13 the pty's peer is /dev/pts/<TIOCGPTN>: -t still gives the command a
    terminal of the container's devpts (stdout and stderr are the pty; stdin /dev/null without -i)."""
    image = pulled("busybox")
    r = run_without(aishell, enosys, ["TIOCGPTPEER"], image,
                    "sh", "-c", 't=$(tty 0<&2) && [ -c "$t" ] && echo "INSIDE $t"', opts=("-t",))
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"INSIDE /dev/pts/\d+\n", r.stdout), r.stdout
