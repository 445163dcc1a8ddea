"""aishell check (issue 12, "Commands"): what is there, the user namespace mode and why, what
blocks running and the exact fix, as text and as JSON, with exit status 1 exactly when something
blocks running. check never creates or changes the store.

The blocked cases are simulated without touching the host: a user with no /etc/subuid range
(created here when missing), a PATH without newuidmap, a store made for another mapping, and
user.max_user_namespaces=0 set inside a user namespace of its own (the limit is per namespace,
so the host's stays as it is)."""
import calendar
import json
import os
import pwd
import subprocess
import time

import pytest

from helpers import users
from helpers.chain import BASE, BASE_LINE, EXT_LINE, built, ext_name, set_up_chain
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


def test_check_shows_when_setup_last_pulled_the_foundation(aishell, foundation):
    """The pull date is the last pull, recorded by setup: `setup --force` re-pulls the same
    manifest (no blob is written again, so the manifest blob's mtime says nothing about it); a
    plain setup that pulls nothing keeps the date."""
    ref, digest = foundation
    old = calendar.timegm((2001, 2, 3, 4, 5, 6))
    os.utime(os.path.join(aishell.store, "oci", "blobs", "sha256", digest.split(":", 1)[1]), (old, old))
    start = int(time.time())
    aishell("setup", "--force", user="unpriv")
    assert image_names(aishell.store)["aishell:foundation"]["digest"] == digest
    status, j = check_json(aishell)
    assert status == 0
    pulled = j["foundation"]["pulled"]
    assert calendar.timegm(time.strptime(pulled, "%Y-%m-%dT%H:%M:%SZ")) >= start, pulled
    assert f"Foundation: {ref} ({digest}, pulled {pulled})\n" in check(aishell).stdout

    # A plain setup finds the foundation in place and pulls nothing: the date stays.
    with open(os.path.join(aishell.store, "meta.json")) as f:
        meta = json.load(f)
    assert meta["foundation.pulled"] == pulled
    meta["foundation.pulled"] = "2002-03-04T05:06:07Z"
    with open(os.path.join(aishell.store, "meta.json"), "w") as f:
        json.dump(meta, f)
    assert "Pulling" not in aishell("setup", user="unpriv").stderr
    assert check_json(aishell)[1]["foundation"]["pulled"] == "2002-03-04T05:06:07Z"


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


# ---- the image chain: what the next run builds, and why ---------------------------------------
# Each state check reports is followed by the run it predicts: check and the chain's rebuild
# decision are one code path (composer::chain_status), so "up to date" means the next run builds
# nothing and "stale" means it builds. check writes nothing, in any state.

@pytest.fixture
def chain(aishell, registry, rt_images):
    return set_up_chain(aishell, registry, rt_images)


def chain_check(chain, cwd, status=0):
    """check's chain lines (text) and its JSON facts, run in cwd. (tmp/ is left out of the
    comparison: the previous exec's run dir may still be going away in the background.)"""
    before = snapshot(chain.aishell.store)
    r = chain.aishell("check", user="unpriv", cwd=cwd, check=False)
    assert r.returncode == status, r.stdout + r.stderr
    j = json.loads(chain.aishell("check", "--json", user="unpriv", cwd=cwd, check=False).stdout)
    assert diff_snapshots(before, snapshot(chain.aishell.store)) == ""
    lines = [line for line in r.stdout.splitlines() if line.startswith(("Base image:", "Project"))]
    return lines, j


def stale(*reasons, alias=False):
    return "stale (" + "; ".join(reasons) + "): the next run " + ("points it at the foundation" if alias else
                                                                 "rebuilds it")


def test_check_shows_the_default_base_and_a_project_without_an_image(chain):
    project = os.path.realpath(chain.project())
    lines, j = chain_check(chain, project)
    assert lines == ["Base image: default (foundation alias), up to date", f"Project: {project}",
                     "Project image: none (no .aishell/Dockerfile: runs aishell:base)"]
    assert j["base"] == {"custom": False, "name": "aishell:base", "digest": chain.names()["aishell:foundation"],
                         "dockerfile": None, "upToDate": True, "reasons": []}
    assert j["project"] == {"path": project, "ext": None}
    assert built(chain.exec(project, "true")) == []


def test_check_follows_a_custom_base_through_its_changes(chain, rt_images):
    project = os.path.realpath(chain.project())
    path = chain.base_dockerfile("FROM aishell:foundation\nCOPY data /data\n")
    data = os.path.join(chain.aishell.home, ".aishell", "data")
    chain.write(data, "1\n")

    def base_says(state, reasons):
        lines, j = chain_check(chain, project)
        assert lines[0] == "Base image: custom (~/.aishell/Dockerfile), " + state
        assert j["base"]["custom"] is True and j["base"]["dockerfile"] == os.path.realpath(path)
        assert j["base"]["upToDate"] is (reasons == []) and j["base"]["reasons"] == reasons
        return j

    base_says(stale("not built yet"), ["not built yet"])
    assert built(chain.exec(project, "true")) == [BASE_LINE]
    j = base_says("up to date", [])
    assert j["base"]["digest"] == chain.names()["aishell:base"]
    assert built(chain.exec(project, "true")) == []
    # ~/.aishell/certs.d is aishell's configuration, not the base's context: for check either.
    chain.write(os.path.join(chain.aishell.home, ".aishell", "certs.d", "reg.example", "ca.crt"), "CA\n")
    base_says("up to date", [])
    assert built(chain.exec(project, "true")) == []

    chain.write(data, "2\n")
    base_says(stale("a file in its context changed"), ["a file in its context changed"])
    assert built(chain.exec(project, "cat", "/data")) == [BASE_LINE]

    chain.base_dockerfile("FROM aishell:foundation\nCOPY data /data\nRUN true\n")
    base_says(stale("its Dockerfile changed"), ["its Dockerfile changed"])
    assert built(chain.exec(project, "true")) == [BASE_LINE]
    base_says("up to date", [])

    # A foundation pulled again under another digest: the base was built on the old one.
    rt_images.push(rt_images.sudo, chain.registry, "lib/foundation:2")
    chain.aishell("setup", "--foundation", f"{chain.registry.host}/lib/foundation:2", user="unpriv")
    moved = "aishell:foundation moved on since it was built"
    base_says(stale(moved), [moved])
    assert built(chain.exec(project, "true")) == [BASE_LINE]

    os.unlink(path)
    reason = "~/.aishell/Dockerfile is gone: aishell:base is still the image built from it"
    lines, j = chain_check(chain, project)
    assert lines[0] == "Base image: default (foundation alias), " + stale(reason, alias=True)
    assert j["base"]["custom"] is False and j["base"]["reasons"] == [reason]
    assert built(chain.exec(project, "true")) == []
    lines, j = chain_check(chain, project)
    assert lines[0] == "Base image: default (foundation alias), up to date"
    assert j["base"]["digest"] == chain.names()["aishell:foundation"]


def test_check_follows_a_projects_image_through_its_changes(chain):
    chain.base_dockerfile(BASE)
    project = os.path.realpath(chain.project(dockerfile="FROM aishell:base\nCOPY data /data\n", files={"data": "1\n"}))
    ext = ext_name(project)
    dockerfile = os.path.join(project, ".aishell", "Dockerfile")

    def ext_says(state, reasons, base_reasons=()):
        lines, j = chain_check(chain, project)
        assert lines[1:] == [f"Project: {project}", f"Project image: {ext} ({dockerfile}), {state}"]
        assert j["base"]["reasons"] == list(base_reasons)
        e = j["project"]["ext"]
        assert e["name"] == ext and e["dockerfile"] == dockerfile
        assert e["upToDate"] is (reasons == []) and e["reasons"] == reasons
        return e

    ext_says(stale("not built yet"), ["not built yet"], ["not built yet"])
    assert built(chain.exec(project, "true")) == [BASE_LINE, EXT_LINE]
    assert ext_says("up to date", [])["digest"] == chain.names()[ext]
    assert built(chain.exec(project, "true")) == []

    chain.write(os.path.join(project, ".aishell", "data"), "2\n")
    ext_says(stale("a file in its context changed"), ["a file in its context changed"])
    assert built(chain.exec(project, "true")) == [EXT_LINE]

    chain.write(dockerfile, "FROM aishell:base\nCOPY data /data\nRUN true\n")
    ext_says(stale("its Dockerfile changed"), ["its Dockerfile changed"])
    assert built(chain.exec(project, "true")) == [EXT_LINE]

    # A stale base is rebuilt first, and the ext with it.
    chain.base_dockerfile(BASE.replace("base-1", "base-2"))
    ext_says(stale("aishell:base, which it is built on, is stale"), ["aishell:base, which it is built on, is stale"],
             ["its Dockerfile changed"])
    assert built(chain.exec(project, "true")) == [BASE_LINE, EXT_LINE]

    # The base rebuilt by a run in another project: this ext is built on the old one.
    other = chain.project("other")
    chain.base_dockerfile(BASE.replace("base-1", "base-3"))
    assert built(chain.exec(other, "true")) == [BASE_LINE]
    ext_says(stale("aishell:base moved on since it was built"), ["aishell:base moved on since it was built"])
    assert built(chain.exec(project, "true")) == [EXT_LINE]

    # setup --force rebuilds the base at once (the same content) and marks every ext stale.
    chain.aishell("setup", "--force", user="unpriv")
    e = json.loads(chain.aishell("check", "--json", user="unpriv", cwd=project).stdout)["project"]["ext"]
    assert "`aishell setup --force` marked it for a rebuild" in e["reasons"] and e["upToDate"] is False
    assert built(chain.exec(project, "true")) == [EXT_LINE]
    ext_says("up to date", [])


def test_check_names_a_project_dockerfile_the_next_run_cannot_read(chain):
    project = chain.project(dockerfile="FROM aishell:base\nNOT-AN-INSTRUCTION x\n")
    dockerfile = os.path.join(project, ".aishell", "Dockerfile")
    lines, j = chain_check(chain, project, status=1)
    e = j["project"]["ext"]
    assert e["upToDate"] is False and e["error"]
    prefix = f"the next run cannot build {ext_name(project)}: "
    problem = next(p for p in j["problems"] if p["problem"].startswith(prefix))
    assert dockerfile in problem["problem"] + problem["fix"], problem
    assert chain.exec(project, "true", check=False).returncode == 125
