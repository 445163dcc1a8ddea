"""Cleaning up the store (issue 12, "Commands"): `rmi` and `tag` (refusing the chain's names),
`volumes ls|rm|prune` and `system reset`, as the unprivileged user in subuid mode.

What is checked against the store itself (never through aishell): after a prune every blob that
is left hashes to its name and every image still verifies (helpers/store.verify_store, `skopeo
inspect`) and runs; nothing a running exec holds (its image, layer trees, run dir, volumes) is
taken; files owned by subordinate ids, which the user cannot delete with rm -rf, are removed
through the store's user namespace."""
import glob
import json
import os
import subprocess
import time

import pytest

from helpers import users
from helpers.build import make_context
from helpers.checks import assert_one_error, skopeo_inspect, wait_for
from helpers.store import image_names, read_blob, snapshot, diff_snapshots, verify_store
from helpers.terminal import Terminal

MODE = {"AISHELL_USERNS": "subuid"}

CHAIN_HINTS = {
    "aishell:foundation": "choose another foundation with `aishell setup --foundation REF`",
    "aishell:base": "edit ~/.aishell/Dockerfile to change the base, or delete it to use the foundation",
    "aishell:ext-0123456789ab": "a project's image is rebuilt from its .aishell/Dockerfile; `aishell volumes prune` "
                                "removes those of projects that are gone",
}


def ai(aishell, *args, check=True, env=None):
    return aishell(*args, user="unpriv", env={**MODE, **(env or {})}, check=check)


def parts(store, name):
    """(blob digests, diff_id hexes) of an image named in index.json."""
    desc = image_names(store)[name]
    manifest = json.loads(read_blob(store, desc["digest"]))
    config = json.loads(read_blob(store, manifest["config"]["digest"]))
    blobs = {desc["digest"], manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}
    return blobs, [d.split(":", 1)[1] for d in config["rootfs"]["diff_ids"]]


def blobs_on_disk(store):
    return {"sha256:" + n for n in os.listdir(os.path.join(store, "oci", "blobs", "sha256"))}


def trees_on_disk(store):
    return {n for n in os.listdir(os.path.join(store, "layers")) if not n.endswith(".owners")}


def assert_store_verifies(aishell):
    problems = verify_store(aishell.store)
    assert not problems, "store does not verify:\n" + "\n".join(problems)
    for name in image_names(aishell.store):
        skopeo_inspect(aishell.store, name)


def drop_names(store):
    """Empties index.json (atomically, keeping its owner), as an untag by the chain would."""
    path = os.path.join(store, "oci", "index.json")
    index = json.load(open(path))
    index["manifests"] = []
    st = os.stat(path)
    with open(path + ".new", "w") as f:
        json.dump(index, f)
    os.chown(path + ".new", st.st_uid, st.st_gid)
    os.rename(path + ".new", path)


def make_volume(aishell, name, files=("data",)):
    """volumes/NAME with files, made as `-v NAME:/path` would (owned by the user)."""
    path = aishell.make_dir(os.path.join(aishell.store, "volumes", name))
    os.chmod(os.path.join(aishell.store, "volumes"), 0o700)
    os.chown(os.path.join(aishell.store, "volumes"), aishell.entry.pw_uid, aishell.entry.pw_gid)
    for f in files:
        with open(os.path.join(path, f), "w") as out:
            out.write("x" * 5000)
        os.chown(os.path.join(path, f), aishell.entry.pw_uid, aishell.entry.pw_gid)
    return path


# ---- rmi and tag ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CHAIN_HINTS))
def test_rmi_and_tag_refuse_the_chain_names(aishell, busybox, name):
    before = snapshot(aishell.store)
    r = ai(aishell, "rmi", name, check=False)
    assert r.returncode == 1
    assert r.stderr == (f"aishell: error: {name} belongs to aishell's image chain and cannot be removed; "
                        f"{CHAIN_HINTS[name]}\n")
    r = ai(aishell, "tag", busybox, name, check=False)
    assert r.returncode == 1
    assert r.stderr == (f"aishell: error: {name} belongs to aishell's image chain and cannot be overwritten by tag; "
                        f"{CHAIN_HINTS[name]}\n")
    assert diff_snapshots(before, snapshot(aishell.store)) == ""


@pytest.mark.parametrize("name", sorted(CHAIN_HINTS))
def test_build_t_refuses_the_chain_names(aishell, busybox, name):
    """build -t would move a chain name as tag would: refused before anything is built, among
    other -t names too."""
    ctx = make_context(aishell, {"Dockerfile": f"FROM {busybox}\nRUN echo built > /m\n"})
    before = snapshot(aishell.store)
    r = ai(aishell, "build", "-t", "mine:1", "-t", name, ctx, check=False)
    assert r.returncode == 1
    assert r.stderr == (f"aishell: error: {name} belongs to aishell's image chain and cannot be overwritten by "
                        f"build -t; {CHAIN_HINTS[name]}\n")
    assert diff_snapshots(before, snapshot(aishell.store)) == ""
    assert ai(aishell, "build", "-t", "aishell:basement", ctx).returncode == 0, "only the chain's own names"


def test_tag_names_an_image_and_rmi_removes_only_the_name(aishell, busybox):
    digest = image_names(aishell.store)[busybox]["digest"]
    ai(aishell, "tag", busybox, "mine:1")
    assert image_names(aishell.store)["mine:1"]["digest"] == digest
    assert ai(aishell, "exec", "--image", "mine:1", "--", "echo", "ok").stdout == "ok\n"
    blobs, trees = parts(aishell.store, busybox)

    r = ai(aishell, "rmi", busybox, "mine:1")
    assert r.stdout == f"Untagged: {busybox}\nUntagged: mine:1\n"
    assert image_names(aishell.store) == {}
    # The data stays until a prune, as `docker rmi` leaves what a build cache may want.
    assert blobs <= blobs_on_disk(aishell.store)
    assert set(trees) <= trees_on_disk(aishell.store)

    assert_one_error(ai(aishell, "rmi", "mine:1", check=False), "no such image in the store: mine:1")
    assert_one_error(ai(aishell, "tag", "nothere", "x", check=False), "no such image in the store: nothere")
    assert_one_error(ai(aishell, "tag", busybox, "Bad Name", check=False), "tag Bad Name: ")


def test_rmi_of_an_image_a_running_exec_uses_fails(aishell, busybox, tmp_path):
    ai(aishell, "tag", busybox, "other:1")
    gate = aishell.make_dir(os.path.join(aishell.workdir, "gate"))
    run = aishell.popen("exec", "--image", "other:1", "-v", f"{gate}:/gate", "--", "sh", "-c",
                        "touch /gate/started; until [ -e /gate/go ]; do sleep 0.02; done",
                        user="unpriv", env=MODE)
    try:
        wait_for(lambda: os.path.exists(os.path.join(gate, "started")) or run.poll() is not None,
                 timeout=60, what="the container to start")
        assert run.poll() is None, run.communicate()
        # Another name is left: removing this one takes nothing from the container.
        ai(aishell, "rmi", busybox)
        r = ai(aishell, "rmi", "other:1", check=False)
        assert r.returncode == 1
        assert r.stderr == ("aishell: error: image other:1 is in use by a running container or build "
                            "(hint: stop it first; the name can be removed once it has ended)\n")
        assert "other:1" in image_names(aishell.store)
    finally:
        open(os.path.join(gate, "go"), "w").close()
        run.communicate(timeout=60)
    assert run.returncode == 0
    ai(aishell, "rmi", "other:1")


# ---- volumes -------------------------------------------------------------------------------------

def test_volumes_ls_rm_and_prune_with_and_without_volumes(aishell, busybox):
    make_volume(aishell, "alpha")
    make_volume(aishell, "beta")
    # A file a container's root-switching entrypoint left under a sub id: the user cannot
    # remove it on the host, only through the store's user namespace.
    sub = os.path.join(aishell.store, "volumes", "beta", "owned-by-a-sub-id")
    start, _ = users.subid_range("/etc/subuid", aishell.entry.pw_name)
    os.mkdir(sub)
    open(os.path.join(sub, "f"), "w").close()
    os.chown(os.path.join(sub, "f"), start + 999, start + 999)
    os.chmod(sub, 0o700)
    os.chown(sub, start + 999, start + 999)

    rows = json.loads(ai(aishell, "volumes", "ls", "--json").stdout)
    assert [(r["name"], r["inUse"]) for r in rows] == [("alpha", False), ("beta", False)]
    assert all(r["size"] >= 5000 for r in rows)
    text = ai(aishell, "volumes", "ls").stdout.splitlines()
    assert text[0].split() == ["VOLUME", "NAME", "SIZE", "IN", "USE"]
    assert [line.split()[0] for line in text[1:]] == ["alpha", "beta"]

    # Named volumes hold user data: a prune keeps them unless --volumes says otherwise.
    out = ai(aishell, "volumes", "prune", "--yes").stdout
    assert "volume" not in out
    assert sorted(os.listdir(os.path.join(aishell.store, "volumes"))) == ["alpha", "beta"]

    assert ai(aishell, "volumes", "rm", "alpha").stdout == "alpha\n"
    assert os.listdir(os.path.join(aishell.store, "volumes")) == ["beta"]
    assert_one_error(ai(aishell, "volumes", "rm", "alpha", check=False), "no such volume: alpha")
    assert_one_error(ai(aishell, "volumes", "rm", "../x", check=False), "'../x' is not a volume name")

    out = ai(aishell, "volumes", "prune", "--volumes", "--yes").stdout
    assert "  volume beta (" in out
    assert os.listdir(os.path.join(aishell.store, "volumes")) == []
    assert not glob.glob(os.path.join(aishell.store, "tmp", "gc-*"))
    assert busybox in image_names(aishell.store)


# ---- prune ---------------------------------------------------------------------------------------

def test_prune_asks_lists_and_dry_run_changes_nothing(aishell, busybox):
    ai(aishell, "exec", "--image", busybox, "--", "true")  # unpacks its layer trees
    blobs, trees = parts(aishell.store, busybox)
    ai(aishell, "rmi", busybox)
    before = snapshot(aishell.store)
    # No terminal and no --yes: nothing is removed, and the error says how to go ahead.
    r = ai(aishell, "volumes", "prune", check=False)
    assert r.returncode == 1
    assert r.stdout.startswith("Will remove:\n")
    assert r.stderr == ("aishell: error: not removing anything without a confirmation, and stdin is not a terminal "
                        "to ask on (hint: pass --yes to remove them, or --dry-run to only list them)\n")
    r = ai(aishell, "volumes", "prune", "--dry-run")
    lines = r.stdout.splitlines()
    assert lines[0] == "Would remove:"
    assert f"  {len(blobs)} blobs no image uses (" in r.stdout, lines
    assert f"  {len(trees)} unpacked layer tree{'s' if len(trees) > 1 else ''} no image uses (" in r.stdout, lines
    assert lines[-1].startswith("Would reclaim: ")
    assert diff_snapshots(before, snapshot(aishell.store)) == ""

    r = ai(aishell, "volumes", "prune", "--yes")
    assert r.stdout.splitlines()[-1].startswith("Total reclaimed space: ")
    assert blobs_on_disk(aishell.store) == set()
    assert trees_on_disk(aishell.store) == set()
    assert ai(aishell, "volumes", "prune", "--yes").stdout == "Nothing to remove.\n"


def test_prune_takes_unused_blobs_trees_cache_and_keep_id_copies_and_the_rest_still_runs(aishell, reg):
    base = f"{reg.host}/busybox:latest"
    ai(aishell, "pull", base)
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN echo one > /one\n"})
    ai(aishell, "build", "-t", "one", ctx)
    ctx2 = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN echo two > /two\n"}, name="ctx2")
    ai(aishell, "build", "-t", "two", ctx2)
    # keep-id in subuid mode makes re-owned copies of the layers (layers-idmap-*).
    assert ai(aishell, "exec", "--userns=keep-id", "--image", "one", "--", "cat", "/one").stdout == "one\n"
    [copies] = glob.glob(os.path.join(aishell.store, "layers-idmap-*"))
    one_blobs, one_trees = parts(aishell.store, "one")
    two_blobs, two_trees = parts(aishell.store, "two")
    only_one = set(one_trees) - set(two_trees)
    assert only_one and set(os.listdir(copies)) >= set(one_trees)
    cache_before = glob.glob(os.path.join(aishell.store, "cache", "*.json"))

    ai(aishell, "rmi", "one")
    out = ai(aishell, "volumes", "prune", "--yes").stdout
    assert "build cache entry no image needs" in out or "build cache entries no image needs" in out, out

    on_disk = blobs_on_disk(aishell.store)
    assert not (one_blobs - two_blobs) & on_disk
    assert two_blobs <= on_disk
    assert not only_one & trees_on_disk(aishell.store)
    assert not only_one & set(os.listdir(copies))
    assert len(glob.glob(os.path.join(aishell.store, "cache", "*.json"))) == len(cache_before) - 1
    assert not glob.glob(os.path.join(aishell.store, "tmp", "gc-*"))
    assert_store_verifies(aishell)
    assert ai(aishell, "exec", "--image", "two", "--", "cat", "/two").stdout == "two\n"
    # The cache entry of `two`'s step is kept: rebuilding it is all CACHED.
    r = ai(aishell, "build", "-t", "two", ctx2)
    assert "CACHED" in r.stdout + r.stderr


def test_prune_during_a_running_exec_leaves_its_image_trees_volumes_and_run_dir(aishell, busybox):
    ai(aishell, "tag", busybox, "held:1")
    blobs, trees = parts(aishell.store, busybox)
    gate = aishell.make_dir(os.path.join(aishell.workdir, "gate"))
    run = aishell.popen("exec", "--image", "held:1", "-v", f"{gate}:/gate", "-v", "held-data:/data", "--", "sh", "-c",
                        "echo before > /state; echo kept > /data/f; touch /gate/started; "
                        "until [ -e /gate/go ]; do sleep 0.02; done; cat /state /data/f; ls /bin | wc -l",
                        user="unpriv", env=MODE)
    try:
        wait_for(lambda: os.path.exists(os.path.join(gate, "started")) or run.poll() is not None,
                 timeout=60, what="the container to start")
        assert run.poll() is None, run.communicate()
        # Nothing names the image any more (as when the chain re-points aishell:base during a
        # run; rmi refuses the last name of an image in use), and its run dir looks days old.
        drop_names(aishell.store)
        for run_dir in glob.glob(os.path.join(aishell.store, "tmp", "run-*")):
            old = time.time() - 3 * 24 * 3600
            os.utime(run_dir, (old, old))
        # --volumes too: the volume the run uses is leased as well.
        ai(aishell, "volumes", "prune", "--volumes", "--yes")
        assert os.path.isfile(os.path.join(aishell.store, "volumes", "held-data", "f"))
        assert blobs <= blobs_on_disk(aishell.store)
        assert set(trees) <= trees_on_disk(aishell.store)
        assert glob.glob(os.path.join(aishell.store, "tmp", "run-*"))
    finally:
        open(os.path.join(gate, "go"), "w").close()
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert out.splitlines()[:2] == ["before", "kept"]
    assert int(out.splitlines()[2]) > 30
    # Once it has ended, its lease protects nothing.
    ai(aishell, "volumes", "prune", "--volumes", "--yes")
    assert not os.path.exists(os.path.join(aishell.store, "volumes", "held-data"))
    assert not blobs & blobs_on_disk(aishell.store)
    assert not set(trees) & trees_on_disk(aishell.store)


def test_prune_removes_only_what_it_listed_when_the_user_said_yes(aishell, busybox):
    # The plan is made before the question and the removal after it: what changed while the
    # question waited (a run that held a volume ended, an image lost its last name) was not
    # listed, so it stays until the next prune lists it.
    ai(aishell, "exec", "--image", busybox, "-v", "free-data:/d", "--", "true")
    ctx = make_context(aishell, {"Dockerfile": f"FROM {busybox}\nRUN echo late > /late\n"})
    ai(aishell, "build", "-t", "late:1", ctx)
    late_blobs = parts(aishell.store, "late:1")[0] - parts(aishell.store, busybox)[0]
    gate = aishell.make_dir(os.path.join(aishell.workdir, "gate"))
    run = aishell.popen("exec", "--image", busybox, "-v", f"{gate}:/gate", "-v", "held-data:/data", "--", "sh", "-c",
                        "echo kept > /data/f; touch /gate/started; until [ -e /gate/go ]; do sleep 0.02; done",
                        user="unpriv", env=MODE)
    term = None
    try:
        wait_for(lambda: os.path.exists(os.path.join(gate, "started")) or run.poll() is not None,
                 timeout=60, what="the container to start")
        assert run.poll() is None, run.communicate()
        term = Terminal(aishell, ["volumes", "prune", "--volumes"], MODE["AISHELL_USERNS"])
        shown = term.read_until("Remove them? [y/N] ", timeout=60)
        assert "  volume free-data (" in shown
        assert "Kept: volume held-data is in use by a running container" in shown
        assert "late" not in shown and "image" not in shown, shown
        # While the question waits: the run ends, and late:1 loses its only name.
        open(os.path.join(gate, "go"), "w").close()
        assert run.wait(timeout=60) == 0
        ai(aishell, "rmi", "late:1")
        term.type("y\n")
        term.read_until("Total reclaimed space: ", timeout=60)
        assert term.proc.wait(timeout=60) == 0
    finally:
        open(os.path.join(gate, "go"), "w").close()
        run.communicate(timeout=60)
        if term:
            term.close()
    volumes = os.path.join(aishell.store, "volumes")
    assert not os.path.exists(os.path.join(volumes, "free-data"))
    assert os.path.isfile(os.path.join(volumes, "held-data", "f")), "a volume the plan kept was removed"
    assert late_blobs and late_blobs <= blobs_on_disk(aishell.store), "blobs the plan did not list were removed"
    # The next prune lists them, and takes them.
    out = ai(aishell, "volumes", "prune", "--volumes", "--yes").stdout
    assert "  volume held-data (" in out
    assert not os.path.exists(os.path.join(volumes, "held-data"))
    assert not late_blobs & blobs_on_disk(aishell.store)
    assert_store_verifies(aishell)


# ---- system reset --------------------------------------------------------------------------------

def test_system_reset_removes_sub_id_owned_files_and_ends_the_holder(aishell, reg):
    base = f"{reg.host}/busybox:latest"
    ai(aishell, "pull", base)
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\n"
                                 "RUN mkdir -m 700 /private && echo x > /private/f && chown -R 1000:1000 /private\n"})
    ai(aishell, "build", "-t", "owned", ctx)
    ai(aishell, "exec", "--image", "owned", "--", "true")  # starts the store's holder
    [record] = glob.glob(os.path.join(aishell.store, "tmp", "userns-*.holder"))
    holder = int(open(record).read().split()[0])
    assert open(f"/proc/{holder}/comm").read().strip() == "aishell-userns"
    # Control: the user cannot delete the store with rm -rf (a sub id owns /private).
    r = subprocess.run(["setpriv", f"--reuid={aishell.entry.pw_uid}", f"--regid={aishell.entry.pw_gid}",
                        "--init-groups", "--", "rm", "-rf", os.path.join(aishell.store, "layers")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r

    r = ai(aishell, "system", "reset", check=False)
    assert r.returncode == 1 and "pass --yes to remove the store" in r.stderr
    assert os.path.isdir(aishell.store)
    r = ai(aishell, "system", "reset", "--yes")
    assert r.stdout.splitlines()[-1] == f"Removed {aishell.store}"
    assert not os.path.exists(aishell.store)
    assert not [n for n in os.listdir(os.path.dirname(aishell.store)) if n.startswith(".store.reset-")]
    wait_for(lambda: not os.path.exists(f"/proc/{holder}") or
             open(f"/proc/{holder}/comm").read().strip() != "aishell-userns", timeout=10,
             what="the holder to end")
    # A fresh store works afterwards.
    ai(aishell, "pull", base)


def test_system_reset_refuses_a_store_a_running_exec_uses_and_what_is_not_a_store(aishell, busybox):
    gate = aishell.make_dir(os.path.join(aishell.workdir, "gate"))
    run = aishell.popen("exec", "--image", busybox, "-v", f"{gate}:/gate", "--", "sh", "-c",
                        "touch /gate/started; until [ -e /gate/go ]; do sleep 0.02; done",
                        user="unpriv", env=MODE)
    try:
        wait_for(lambda: os.path.exists(os.path.join(gate, "started")) or run.poll() is not None,
                 timeout=60, what="the container to start")
        r = ai(aishell, "system", "reset", "--yes", check=False)
        assert r.returncode == 1
        assert r.stderr == ("aishell: error: 1 running aishell command(s) (containers or builds) use this store "
                            "(hint: wait for them to end, or pass --force to remove it from under them)\n")
        assert busybox in image_names(aishell.store)
    finally:
        open(os.path.join(gate, "go"), "w").close()
        run.communicate(timeout=60)
    not_a_store = aishell.make_dir(os.path.join(aishell.workdir, "notastore"))
    open(os.path.join(not_a_store, "keep"), "w").close()
    r = aishell("system", "reset", "--yes", user="unpriv", env={"AISHELL_STORE": not_a_store}, check=False)
    assert r.returncode == 1 and "does not look like an aishell store" in r.stderr
    assert os.path.exists(os.path.join(not_a_store, "keep"))


# ---- the chain's orphans -------------------------------------------------------------------------

def write_as_user(aishell, path, data, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    os.chown(os.path.dirname(path), aishell.entry.pw_uid, aishell.entry.pw_gid)
    with open(path + ".new", "w") as f:
        f.write(data)
    os.chmod(path + ".new", mode)
    os.chown(path + ".new", aishell.entry.pw_uid, aishell.entry.pw_gid)
    os.rename(path + ".new", path)


def name_in_index(store, name, desc):
    """Adds `name` for the manifest `desc` to index.json, as the chain does when it builds."""
    path = os.path.join(store, "oci", "index.json")
    index = json.load(open(path))
    entry = {k: v for k, v in desc.items() if k != "annotations"}
    entry["annotations"] = {"org.opencontainers.image.ref.name": name}
    index["manifests"].append(entry)
    st = os.stat(path)
    with open(path + ".new", "w") as f:
        json.dump(index, f)
    os.chown(path + ".new", st.st_uid, st.st_gid)
    os.rename(path + ".new", path)


def ext_record(name, digest, base_digest):
    return {"name": name, "manifest": digest, "custom": True, "input_hash": "sha256:" + "1" * 64,
            "content_hash": "sha256:" + "2" * 64, "from": {"aishell:base": base_digest}, "built_on": base_digest,
            "generation": 0}


def test_prune_takes_the_chains_orphans_by_its_record_not_by_names(aishell, busybox):
    ai(aishell, "setup", "--foundation", busybox)
    base = image_names(aishell.store)["aishell:base"]
    digest = base["digest"]
    kept_project = aishell.make_dir(os.path.join(aishell.workdir, "projects", "kept"))
    moved_project = aishell.make_dir(os.path.join(aishell.workdir, "projects", "moved"))
    gone_project = os.path.join(aishell.workdir, "projects", "gone")  # never made, or since deleted
    exts = {"aishell:ext-aaaaaaaaaaaa": gone_project, "aishell:ext-bbbbbbbbbbbb": kept_project,
            "aishell:ext-cccccccccccc": moved_project}
    for name in list(exts) + ["aishell:ext-dddddddddddd"]:
        name_in_index(aishell.store, name, base)
    old_base = "sha256:" + "9" * 64
    record = {"version": 1, "generation": 0, "base": None, "contexts": {}, "exts": {
        gone_project: ext_record("aishell:ext-aaaaaaaaaaaa", digest, digest),
        kept_project: ext_record("aishell:ext-bbbbbbbbbbbb", digest, digest),
        moved_project: ext_record("aishell:ext-cccccccccccc", digest, old_base)}}
    write_as_user(aishell, os.path.join(aishell.store, "chain", "record.json"), json.dumps(record))

    # Tiers come from the record: an ext-* name it does not vouch for is "other".
    rows = {r["name"]: r for r in json.loads(ai(aishell, "images", "--json").stdout)}
    assert rows["aishell:foundation"]["tier"] == "foundation"
    assert rows["aishell:base"]["tier"] == "base" and rows["aishell:base"]["custom"] is False
    assert rows["aishell:ext-bbbbbbbbbbbb"]["tier"] == "ext"
    assert rows["aishell:ext-bbbbbbbbbbbb"]["project"] == kept_project
    assert rows["aishell:ext-dddddddddddd"]["tier"] == "other"
    assert rows[busybox]["tier"] == "other"
    table = ai(aishell, "images").stdout
    assert "base (foundation alias)" in table and f"ext {kept_project}" in table

    out = ai(aishell, "volumes", "prune", "--dry-run").stdout
    assert f"  image aishell:ext-aaaaaaaaaaaa (its project {gone_project} is gone)\n" in out
    assert "  image aishell:ext-cccccccccccc (built on aishell:base, which has moved on)\n" in out
    assert "  image aishell:ext-dddddddddddd (not an image the chain built)\n" in out
    assert "aishell:ext-bbbbbbbbbbbb" not in out
    ai(aishell, "volumes", "prune", "--yes")
    names = image_names(aishell.store)
    assert "aishell:ext-bbbbbbbbbbbb" in names and "aishell:base" in names and "aishell:foundation" in names
    assert not {"aishell:ext-aaaaaaaaaaaa", "aishell:ext-cccccccccccc", "aishell:ext-dddddddddddd"} & set(names)
    after = json.load(open(os.path.join(aishell.store, "chain", "record.json")))
    assert sorted(after["exts"]) == [kept_project]
    assert_store_verifies(aishell)
