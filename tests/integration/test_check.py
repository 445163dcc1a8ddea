"""aishell check (issue 12, "Commands"): what is there, the user namespace mode and why, what
blocks running and the exact fix, as text and as JSON, with exit status 1 exactly when something
blocks running. check never creates or changes the store.

The blocked cases are simulated without touching the host: a user with no /etc/subuid range
(created here when missing), a PATH without newuidmap, a store made for another mapping, and
user.max_user_namespaces=0 set inside a user namespace of its own (the limit is per namespace,
so the host's stays as it is)."""
import json
import os
import pwd
import subprocess

import pytest

from helpers import users
from helpers.store import image_names, snapshot, diff_snapshots

NOSUB_USER = "aishell-nosub"


def check(aishell, *args, env=None, user="unpriv"):
    return aishell("check", *args, user=user, env=env, check=False)


def check_json(aishell, env=None):
    r = check(aishell, "--json", env=env)
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def foundation(aishell, registry, images):
    """A store set up from a loopback registry (no exec yet: no id mapping recorded)."""
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("setup", "--foundation", ref, user="unpriv")
    return ref, image_names(aishell.store)["aishell:foundation"]["digest"]


def nosub_user():
    """A second unprivileged user without a subordinate id range (useradd -K SUB_UID_COUNT=0:
    Debian's useradd gives new users a range otherwise)."""
    try:
        entry = pwd.getpwnam(NOSUB_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-K", "SUB_UID_COUNT=0",
                        "-K", "SUB_GID_COUNT=0", NOSUB_USER], check=True)
        entry = pwd.getpwnam(NOSUB_USER)
    assert users.subid_range("/etc/subuid", NOSUB_USER) is None
    assert users.subid_range("/etc/subgid", NOSUB_USER) is None
    return entry


def test_check_before_setup_says_so_and_creates_nothing(aishell):
    r = check(aishell)
    assert r.returncode == 1
    assert f"Store: {aishell.store} (not created yet)\n" in r.stdout
    assert f"Problem: no store at {aishell.store} yet\n  fix: aishell setup\n" in r.stdout
    assert r.stdout.endswith("Runs are blocked until the problems above are fixed.\n")
    status, j = check_json(aishell)
    assert status == 1 and j["ok"] is False
    assert j["problems"] == [{"problem": f"no store at {aishell.store} yet", "fix": "aishell setup"}]
    assert not os.path.exists(aishell.store)


def test_check_after_setup_in_subuid_mode(aishell, foundation, unpriv_user):
    ref, digest = foundation
    before = snapshot(aishell.store, ignore_top=("lock",))
    r = check(aishell, env={"AISHELL_USERNS": None})
    assert r.returncode == 0, r.stdout + r.stderr
    start, count = users.subid_range("/etc/subuid", unpriv_user)
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"Store: {aishell.store} (")
    assert lines[1].startswith(f"Foundation: {ref} ({digest}, pulled 20")
    assert (f"User namespace mode: subuid (/usr/bin/newuidmap and /usr/bin/newgidmap with the ranges "
            f"{start}:{count} (/etc/subuid)") in r.stdout
    for line in ("User namespaces: work", "Overlayfs with userxattr: works", "Seccomp user notification: available",
                 "No problems found."):
        assert line in lines
    status, j = check_json(aishell)
    assert status == 0 and j["ok"] is True and j["problems"] == []
    assert j["foundation"]["reference"] == ref and j["foundation"]["digest"] == digest
    assert j["userns"]["mode"] == "subuid" and j["userns"]["missing"] == []
    assert j["userNamespaces"]["work"] is True and j["overlayUserxattr"] is True
    assert j["store"]["size"] > 0 and j["store"]["reclaimable"] == 0
    assert j["kernel"]["release"] == os.uname().release and j["kernel"]["supported"] is True
    # The probes left nothing behind.
    assert diff_snapshots(before, snapshot(aishell.store, ignore_top=("lock",))) == ""


def test_check_without_newuidmap_in_path_explains_single_mode(aishell, foundation, tmp_path):
    # A PATH with only setpriv (which the runner itself needs) in it: no newuidmap.
    empty = aishell.make_dir(os.path.join(aishell.workdir, "path-without-uidmap"))
    os.symlink("/usr/bin/setpriv", os.path.join(empty, "setpriv"))
    status, j = check_json(aishell, env={"PATH": empty, "AISHELL_USERNS": None})
    assert status == 0, j
    assert j["userns"]["mode"] == "single"
    assert j["userns"]["missing"] == ["newuidmap not found in PATH", "newgidmap not found in PATH"]
    assert j["userns"]["why"] == "newuidmap not found in PATH; newgidmap not found in PATH"
    assert {"problem": "single mode: newuidmap/newgidmap not found in PATH",
            "fix": "for subuid mode: sudo apt-get install uidmap"} in j["notes"]
    r = check(aishell, env={"PATH": empty, "AISHELL_USERNS": None})
    assert ("User namespace mode: single (newuidmap not found in PATH; newgidmap not found in PATH)\n"
            in r.stdout)
    assert ("Note: single mode: newuidmap/newgidmap not found in PATH\n"
            "  fix: for subuid mode: sudo apt-get install uidmap\n") in r.stdout


def test_check_as_a_user_without_a_subuid_range(aishell, session_dir):
    entry = nosub_user()
    work = os.path.join(aishell.workdir, "nosub")
    os.makedirs(os.path.join(work, "home"))
    users.chown_tree(work, entry)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.path.join(work, "home"), "AISHELL_STORE": os.path.join(work, "store"),
           "LANG": "C.UTF-8"}
    r = subprocess.run(users.as_user_prefix(entry) + [aishell.binary, "check", "--json"], env=env,
                       capture_output=True, text=True, cwd=work)
    j = json.loads(r.stdout)
    assert j["userns"]["mode"] == "single"
    assert j["userns"]["missing"] == [f"no /etc/subuid range for {NOSUB_USER}", f"no /etc/subgid range for {NOSUB_USER}"]
    assert {"problem": f"single mode: only your own id is mapped (no /etc/subuid range for {NOSUB_USER}; "
                       f"no /etc/subgid range for {NOSUB_USER})",
            "fix": f"for subuid mode: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
                   f"{NOSUB_USER} (a range no other user has)"} in j["notes"]
    # Single mode still runs: the only problem is the missing store.
    assert [p["fix"] for p in j["problems"]] == ["aishell setup"]
    assert j["userNamespaces"]["work"] is True


def test_check_refuses_a_store_made_for_another_mapping(aishell, foundation):
    aishell("exec", "--image", "aishell:foundation", "--", "true", user="unpriv", env={"AISHELL_USERNS": "subuid"})
    r = check(aishell, env={"AISHELL_USERNS": "single"})
    assert r.returncode == 1
    assert "User namespace mode: single (AISHELL_USERNS=single)\n" in r.stdout
    assert "Problem: this store's layers are owned for id mapping 'subuid u=0:" in r.stdout
    assert ("  fix: run as the user (and with the AISHELL_USERNS) that created the store, or use another store "
            "(--store)\n") in r.stdout


def test_check_with_user_namespaces_disabled_names_the_sysctl_and_its_fix(aishell, tmp_path):
    # user.max_user_namespaces=0 in a namespace of its own: aishell's probe cannot make one.
    script = f'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh", aishell.binary, "check",
                        "--json"], env={"PATH": "/usr/bin:/bin", "HOME": aishell.home,
                                        "AISHELL_STORE": os.path.join(str(tmp_path), "none")},
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    j = json.loads(r.stdout)
    assert j["userNamespaces"]["work"] is False
    assert j["userNamespaces"]["sysctls"]["user.max_user_namespaces"] == 0
    assert {"problem": "user namespaces are disabled: user.max_user_namespaces=0 "
                       "(unshare(CLONE_NEWUSER|CLONE_NEWNS): No space left on device)",
            "fix": "sudo sysctl -w user.max_user_namespaces=15000 (and the same setting in "
                   "/etc/sysctl.d/60-aishell.conf to keep it after a reboot)"} in j["problems"]
