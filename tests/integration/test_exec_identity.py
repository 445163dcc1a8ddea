"""aishell exec: who runs inside. --userns=keep-id in both userns modes (subuid mode uses layer
trees re-owned for the keep-id mapping, made once and cached), and sudo with a NOPASSWD entry
(no_new_privs stays off unless asked for). Images from helpers/runtime_images.py."""
import glob
import os
import pwd

import pytest


def run(aishell, image, *cmd, mode="subuid", opts=(), **kw):
    return aishell("exec", "--image", image, *opts, "--", *cmd, user="unpriv",
                   env={"AISHELL_USERNS": mode}, check=False, **kw)


def caller(unpriv_user):
    return pwd.getpwnam(unpriv_user)


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_keep_id_runs_as_the_caller_with_a_home(aishell, pulled, unpriv_user, mode):
    image = pulled("busybox")
    me = caller(unpriv_user)
    r = run(aishell, image, "sh", "-c", "id -u; id -g; echo $HOME; id -un; stat -c %u:%U $HOME",
            mode=mode, opts=("--userns=keep-id",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(me.pw_uid), str(me.pw_gid), me.pw_dir, me.pw_name,
                                f"{me.pw_uid}:{me.pw_name}"]


def test_keep_id_in_subuid_mode_keeps_image_owners_and_binds(aishell, pulled, unpriv_user):
    image = pulled("busybox")
    me = caller(unpriv_user)
    d = aishell.make_dir(os.path.join(aishell.workdir, "proj"))
    r = run(aishell, image, "sh", "-c",
            "stat -c %u:%g /bin/busybox /etc/passwd /; touch /proj/made; chown 0 / 2>&1 || echo no-chown",
            opts=("--userns=keep-id", "-v", f"{d}:/proj"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # Files of the image still belong to root inside, though the caller is not root.
    assert lines[:3] == ["0:0", "0:0", "0:0"], r.stdout
    assert lines[-1] == "no-chown"
    st = os.stat(os.path.join(d, "made"))
    assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid)


def test_keep_id_trees_are_made_once_and_default_runs_are_unaffected(aishell, pulled):
    image = pulled("busybox")
    assert run(aishell, image, "true", opts=("--userns=keep-id",)).returncode == 0
    dirs = glob.glob(os.path.join(aishell.store, "layers-idmap-*"))
    assert len(dirs) == 1
    trees = sorted(n for n in os.listdir(dirs[0]) if len(n) == 64)
    assert trees == sorted(os.listdir(os.path.join(aishell.store, "layers")))
    before = {n: os.stat(os.path.join(dirs[0], n)).st_ino for n in trees}
    r = run(aishell, image, "id", "-u", opts=("--userns=keep-id",))
    assert r.returncode == 0, r.stderr
    after = {n: os.stat(os.path.join(dirs[0], n)).st_ino for n in trees}
    assert after == before  # reused, not remade
    assert not [n for n in os.listdir(dirs[0]) if n.startswith(".tmp-")]
    r = run(aishell, image, "sh", "-c", "id -u; stat -c %u /bin/busybox")
    assert r.stdout.split() == ["0", "0"], r.stderr


def test_sudo_nopasswd_gives_root_in_subuid_mode(aishell, pulled):
    image = pulled("sudo")
    r = run(aishell, image, "sh", "-c", "id -un; sudo -n id -u", opts=("--user", "dev"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dev", "0"]


def test_no_new_privileges_stops_sudo(aishell, pulled):
    image = pulled("sudo")
    r = run(aishell, image, "sh", "-c", "grep NoNewPrivs /proc/self/status; sudo -n id -u",
            opts=("--user", "dev", "--security-opt", "no-new-privileges"))
    assert r.returncode != 0
    assert "NoNewPrivs:\t1" in r.stdout
    assert "\n0\n" not in "\n" + r.stdout
    r = run(aishell, image, "grep", "NoNewPrivs", "/proc/self/status", opts=("--user", "dev"))
    assert r.stdout.strip() == "NoNewPrivs:\t0", r.stderr


def test_a_non_root_user_in_single_mode_is_that_user(aishell, pulled, unpriv_user):
    """Single mode maps one id: the caller, to the user the command runs as (--user dev, or a
    bare id), as keep-id maps it to itself. So the command is that user, and what the caller owns
    (a bound project dir) is that user's inside: tools that check owners (git's safe.directory)
    find their files owned by whoever runs them; what it makes there is the caller's outside."""
    image = pulled("sudo")
    me = caller(unpriv_user)
    d = aishell.make_dir(os.path.join(aishell.workdir, "proj"))
    r = run(aishell, image, "sh", "-c", "id -u; id -g; id -un; stat -c %u:%g /proj; touch /proj/made; stat -c %u /proj/made",
            mode="single", opts=("--user", "dev", "-v", f"{d}:/proj"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "1000", "dev", "1000:1000", "1000"], r.stdout
    st = os.stat(os.path.join(d, "made"))
    assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid)
    r = run(aishell, image, "sh", "-c", "id -u; id -g", mode="single", opts=("--user", "4242:4343"))
    assert r.returncode == 0 and r.stdout.split() == ["4242", "4343"], (r.stdout, r.stderr)


def test_a_user_beyond_the_subuid_range_is_the_caller_too(aishell, pulled, unpriv_user):
    """The caller is whoever the command runs as, in subuid mode too (podman's
    --userns=keep-id:uid=N,gid=N): a uid far above the sub range is mapped to the caller, the
    range below it, and what it makes in a bound dir is the caller's."""
    image = pulled("sudo")
    me = caller(unpriv_user)
    d = aishell.make_dir(os.path.join(aishell.workdir, "proj"))
    r = run(aishell, image, "sh", "-c", "id -u; id -g; stat -c %u /bin/busybox; touch /proj/made",
            mode="subuid", opts=("--user", "4000000000:4000000001", "-v", f"{d}:/proj"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4000000000", "4000000001", "0"]
    st = os.stat(os.path.join(d, "made"))
    assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid)
