"""A store is the caller's alone: aishell makes it 0700 whatever the umask, and refuses a store
whose root, oci/, layers/, cache/, tmp/, volumes/ or meta.json another user owns or can write
(that user could put a /bin/sh under the caller's containers), with the fix in the one error
line, as sshd refuses a loose ~/.ssh."""
import os
import stat
import subprocess

import pytest

from helpers import users
from helpers.checks import assert_one_error

PARTS = ("", "oci", "layers", "cache", "tmp")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def run_with_umask(aishell, umask, *args):
    """aishell ARGS as the unprivileged user under the given umask."""
    cmd = users.as_user_prefix(aishell.entry) + [
        "sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', aishell.binary, *args]
    return subprocess.run(cmd, env=aishell.env_for("unpriv"), capture_output=True, text=True,
                          cwd=aishell.home, timeout=120)


def test_a_new_store_is_private_whatever_the_umask(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.hello, reg, "lib/hello:1")
    r = run_with_umask(aishell, 0o002, "pull", ref)
    assert r.returncode == 0, r.stderr
    assert mode(aishell.store) == 0o700
    for part in PARTS:
        path = os.path.join(aishell.store, part)
        assert os.stat(path).st_uid == aishell.entry.pw_uid
        assert mode(path) & 0o022 == 0, f"{path} is {mode(path):04o}"
    # And the store keeps working under that umask.
    r = run_with_umask(aishell, 0o002, "images")
    assert r.returncode == 0 and "lib/hello" in r.stdout, r.stderr


def test_a_store_made_by_another_user_is_refused(aishell):
    aishell("images")  # made by root
    line = assert_one_error(aishell("images", user="unpriv", check=False))
    assert f"{aishell.store} belongs to uid 0, not to you (uid {aishell.entry.pw_uid})" in line, line
    assert "use a store of your own" in line, line


@pytest.mark.parametrize("part", ["layers", "tmp", "meta.json", "volumes", ""])
def test_a_part_others_can_write_is_refused_with_the_fix(aishell, part):
    aishell("images", user="unpriv")
    path = os.path.join(aishell.store, part) if part else aishell.store
    if part == "meta.json":
        with open(path, "w") as f:
            f.write("{}\n")
        os.chown(path, aishell.entry.pw_uid, aishell.entry.pw_gid)
    elif part == "volumes":
        aishell.make_dir(path)
    os.chmod(path, 0o777 if part != "meta.json" else 0o666)
    line = assert_one_error(aishell("images", user="unpriv", check=False))
    writable = os.path.normpath(path)
    assert f"{writable} is writable by other users (mode 0" in line, line
    assert f"(hint: chmod go-w {writable})" in line, line
    os.chmod(path, 0o755 if part != "meta.json" else 0o644)
    aishell("images", user="unpriv")
    assert mode(aishell.store) == 0o700  # an open store is closed to others again


def test_a_part_owned_by_another_user_is_refused(aishell):
    aishell("images", user="unpriv")
    os.chown(os.path.join(aishell.store, "layers"), 0, 0)
    assert_one_error(aishell("images", user="unpriv", check=False),
                     r"/layers belongs to uid 0, not to you")
