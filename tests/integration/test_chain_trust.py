"""Whose files the chain builds from (composer/chain_trust.hpp): another local user must not be
able to make a victim's `aishell` build and run their Dockerfile. The hostile setup is /tmp's:
a root-owned world-writable sticky dir where a second user (aishell-other) plants `.git` and
`.aishell/Dockerfile`; the victim is the unprivileged test user working in a directory of their
own below it (git's CVE-2022-24765 is the same attack on a .git)."""
import os

import pytest

from helpers import users
from helpers.chain import EXT_LINE, built, set_up_chain
from helpers.checks import assert_one_error

PLANTED = "FROM aishell:base\nRUN echo planted > /planted\n"


@pytest.fixture
def chain(aishell, registry, rt_images):
    return set_up_chain(aishell, registry, rt_images)


@pytest.fixture
def other():
    return users.other_user()


def plant(path, entry, text=None):
    """A dir (text None) or file made by root and handed to entry, as that user would make it."""
    if text is None:
        os.makedirs(path, exist_ok=True)
    else:
        with open(path, "w") as f:
            f.write(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def shared_tmp(chain, other):
    """A /tmp-like dir (root, 01777) holding the other user's .git and .aishell/Dockerfile."""
    tmp = os.path.join(chain.aishell.workdir, "tmp")
    os.makedirs(tmp)
    os.chmod(tmp, 0o1777)
    plant(os.path.join(tmp, ".git"), other)
    plant(os.path.join(tmp, ".aishell"), other)
    plant(os.path.join(tmp, ".aishell", "Dockerfile"), other, PLANTED)
    return tmp


def planted_check(chain, cwd):
    return chain.exec(cwd, "sh", "-c", "test -e /planted && echo PLANTED || echo clean; pwd", check=False)


def test_another_users_git_and_dockerfile_above_the_cwd_are_not_the_project(chain, other):
    tmp = shared_tmp(chain, other)
    work = chain.aishell.make_dir(os.path.join(tmp, "work"))
    r = planted_check(chain, work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"clean\n{work}\n"
    assert built(r) == [], "nothing is built from the other user's Dockerfile"
    # The project is the victim's own dir: the other user's tree is not bound either.
    r = chain.exec(work, "sh", "-c", f"test -e {tmp}/.aishell && echo bound || echo absent")
    assert r.stdout == "absent\n"


def test_a_root_owned_dir_never_becomes_the_project_through_a_git_the_caller_made(chain):
    # The caller may create .git in a sticky world-writable dir; the dir is still root's.
    tmp = os.path.join(chain.aishell.workdir, "tmp")
    os.makedirs(tmp)
    os.chmod(tmp, 0o1777)
    plant(os.path.join(tmp, ".git"), chain.aishell.entry)
    work = chain.aishell.make_dir(os.path.join(tmp, "work"))
    r = chain.exec(work, "sh", "-c", f"test -e {tmp}/.git && echo bound || echo absent")
    assert r.stdout == "absent\n"


def test_running_in_the_shared_dir_itself_refuses_the_other_users_aishell_dir(chain, other):
    tmp = shared_tmp(chain, other)
    r = planted_check(chain, tmp)
    assert r.returncode == 125
    line = assert_one_error(r)
    assert f"refusing {tmp}/.aishell: it belongs to {other.pw_name} (uid {other.pw_uid}), not to you " \
           f"({chain.aishell.entry.pw_name} (uid {chain.aishell.entry.pw_uid}))" in line, line
    assert "hint: run aishell in a directory of your own" in line
    assert built(r) == [] and "PLANTED" not in r.stdout


def test_another_users_dockerfile_in_the_callers_own_aishell_dir_is_refused(chain, other):
    project = chain.project("proj", dockerfile="FROM aishell:base\n")
    dockerfile = os.path.join(project, ".aishell", "Dockerfile")
    plant(dockerfile, other, PLANTED)
    r = planted_check(chain, project)
    assert r.returncode == 125
    line = assert_one_error(r, f"refusing {dockerfile}: it belongs to {other.pw_name} ")
    assert built(r) == []


def test_a_base_context_file_another_user_owns_is_refused(chain, other):
    chain.base_dockerfile("FROM aishell:foundation\nCOPY data /data\n")
    data = plant(os.path.join(chain.aishell.home, ".aishell", "data"), other, "theirs\n")
    project = chain.project()
    r = chain.exec(project, "cat", "/data", check=False)
    assert r.returncode == 125
    assert_one_error(r, f"refusing {data}: it belongs to {other.pw_name} ")
    # check reports it as what blocks the next run.
    c = chain.aishell("check", user="unpriv", cwd=project, check=False)
    assert f"refusing {data}: it belongs to {other.pw_name} " in c.stdout


@pytest.mark.parametrize("mode, hint", [(0o666, "chmod o-w"), (0o757, "chmod o-w")])
def test_a_context_entry_other_users_can_write_is_refused_until_fixed(chain, mode, hint):
    project = chain.project("proj", dockerfile="FROM aishell:base\nCOPY data /data\n", files={"data": "1\n"})
    path = os.path.join(project, ".aishell", "data")
    if mode & 0o111:  # a world-writable dir: another user could add to what the build sends
        os.unlink(path)
        chain.aishell.make_dir(path)
    os.chmod(path, mode)
    r = chain.exec(project, "true", check=False)
    assert r.returncode == 125
    line = assert_one_error(r, f"refusing {path}: any user can write to it \\(mode 0{mode:o}\\)")
    assert f"hint: {hint} {path}" in line
    os.chmod(path, mode & ~0o002)
    r = chain.exec(project, "true")
    assert built(r) == [EXT_LINE]


def test_umask_002_files_in_the_callers_private_group_build(chain):
    # Debian and Ubuntu give each user a private group and umask 002: group write is theirs.
    project = chain.project("proj", dockerfile="FROM aishell:base\nCOPY data /data\n", files={"data": "ok\n"})
    for path in (os.path.join(project, ".aishell"), os.path.join(project, ".aishell", "Dockerfile"),
                 os.path.join(project, ".aishell", "data")):
        os.chmod(path, os.stat(path).st_mode | 0o020)
    r = chain.exec(project, "cat", "/data")
    assert r.stdout == "ok\n" and built(r) == [EXT_LINE]
