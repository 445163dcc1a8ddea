"""The unprivileged test user and running commands as it.

scripts/test creates the user (useradd + an /etc/subuid and /etc/subgid range); the tests never
create it themselves and fail loudly when it is missing, so a mis-set-up machine cannot turn
"runs as an unprivileged user" into a silent skip.
"""
import os
import pwd
import subprocess

UNPRIV_USER = os.environ.get("AISHELL_TEST_USER", "aishell-test")


class UserError(Exception):
    pass


def subid_range(path, user):
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] == user:
                    return int(fields[1]), int(fields[2])
    except FileNotFoundError:
        pass
    return None


def check_unpriv_user(name=UNPRIV_USER):
    """pwd entry of the unprivileged user, or UserError saying how to set the machine up."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"unprivileged test user {name!r} does not exist; scripts/test creates "
                        f"it (useradd {name} and a range in /etc/subuid and /etc/subgid)")
    if entry.pw_uid == 0:
        raise UserError(f"test user {name!r} has uid 0; it must be unprivileged")
    for path in ("/etc/subuid", "/etc/subgid"):
        r = subid_range(path, name)
        if not r or r[1] < 65536:
            raise UserError(f"{path} has no range of at least 65536 ids for {name!r}; "
                            f"add e.g. '{name}:200000:65536' (scripts/test does)")
    return entry


def as_user_prefix(entry):
    """Command prefix that runs the rest as entry's uid/gid with its supplementary groups.

    setpriv execs the command directly (no PAM session, no extra parent process), so the pid a
    test gets from Popen is aishell's own and signals sent to it reach aishell.
    """
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--"]


def user_can_execute(entry, path):
    proc = subprocess.run(as_user_prefix(entry) + ["test", "-x", path], capture_output=True)
    return proc.returncode == 0


def chown_tree(path, entry):
    for root, dirs, files in os.walk(path):
        os.lchown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


OTHER_USER = "aishell-other"


def other_user(name=OTHER_USER):
    """A second local user, the one who plants files another user's aishell must not trust
    (test_chain_trust.py). No home, no login shell, no subordinate ids: it never runs aishell."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-K", "SUB_UID_COUNT=0",
                        "-K", "SUB_GID_COUNT=0", name], check=True)
        return pwd.getpwnam(name)
