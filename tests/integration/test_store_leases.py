"""Concurrent commands on one store (issue 10, item 1): a failed build takes back only what it
wrote itself, and never what another command leases (DESIGN.md "Store": leases).

Each scenario runs 20 times as the unprivileged user (subuid mode). The builds wait inside a RUN
for a gate file the test creates, in a cache mount (a host directory under the store), so the
interleaving is fixed by the test and not by timing:
- a build that fails while an `exec` of another image, whose layers that exec unpacked after the
  build started, is running: the container still sees its files afterwards;
- two builds at once, one failing: the other still finds its layers and its image is complete.
After each, every blob verifies, and the failed build left nothing of its own behind."""
import glob
import json
import os
import shutil

import pytest

from helpers.build import make_context
from helpers.checks import wait_for
from helpers.store import read_blob, read_index, verify_store

ROUNDS = 20
MODE = {"AISHELL_USERNS": "subuid"}


def gated(name, before, after):
    """A Dockerfile: `before`, a RUN that waits at gate `name`, `after`. The RUN marks its cache
    dir (a host directory under the store) with the gate's name, says it is waiting, and goes
    on once the test creates `go` there."""
    return before + (f"RUN --mount=type=cache,id=gate-{name},target=/gate sh -c "
                     f"'echo {name} > /gate/gate-name; touch /gate/waiting; "
                     f"until [ -e /gate/go ]; do sleep 0.02; done'\n") + after


def gated_build(aishell, ctx, name, *args):
    """Starts `aishell build ARGS CTX`; returns it and its gate's host directory once it waits there."""
    proc = aishell.popen("build", *args, ctx, user="unpriv", env=MODE)

    def gate_dir():
        for waiting in glob.glob(os.path.join(aishell.store, "cache", "mounts", "*", "data", "waiting")):
            marker = os.path.join(os.path.dirname(waiting), "gate-name")
            if os.path.exists(marker) and open(marker).read().strip() == name:
                return os.path.dirname(waiting)
        assert proc.poll() is None, f"the build ended before gate {name}: {proc.communicate()}"
        return None
    wait_for(gate_dir, timeout=60, what=f"the build to wait at gate {name}")
    return proc, gate_dir()


def open_gate(gate_dir):
    open(os.path.join(gate_dir, "go"), "w").close()


def close_gate(gate_dir):
    for name in ("waiting", "go"):
        if os.path.exists(os.path.join(gate_dir, name)):
            os.unlink(os.path.join(gate_dir, name))


def image_parts(store, name):
    """(blob digests, diff_id hexes) of an image named in index.json."""
    desc = next(d for d in read_index(store)["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == name)
    manifest = json.loads(read_blob(store, desc["digest"]))
    config = json.loads(read_blob(store, manifest["config"]["digest"]))
    blobs = {desc["digest"], manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}
    return blobs, [d.split(":", 1)[1] for d in config["rootfs"]["diff_ids"]]


def wanted_parts(store):
    """Blobs and layer trees something still names: the images in index.json, the build cache."""
    blobs, trees = set(), set()
    for desc in read_index(store)["manifests"]:
        b, t = image_parts(store, desc["annotations"]["org.opencontainers.image.ref.name"])
        blobs |= b
        trees |= set(t)
    for entry in glob.glob(os.path.join(store, "cache", "*.json")):
        with open(entry) as f:
            e = json.load(f)
        if e.get("layer"):
            blobs.add(e["layer"]["digest"])
            trees.add(e["diff_id"].split(":", 1)[1])
    return blobs, trees


def assert_nothing_left_over(store):
    """The store verifies; no blob or tree that nothing names (a failed build's own) remains; no
    lease outlives its command; no tree is left in tmp/."""
    problems = verify_store(store)
    assert not problems, "store does not verify:\n" + "\n".join(problems)
    blobs, trees = wanted_parts(store)
    on_disk = {"sha256:" + n for n in os.listdir(os.path.join(store, "oci", "blobs", "sha256"))}
    assert on_disk - blobs == set(), "blobs nothing names"
    layers = {n for n in os.listdir(os.path.join(store, "layers")) if not n.endswith(".owners")}
    assert layers - trees == set(), "layer trees nothing names"
    assert os.listdir(os.path.join(store, "leases")) == []
    assert not [n for n in os.listdir(os.path.join(store, "tmp")) if n.startswith(("rollback-", "build-", "unpack-"))]


@pytest.fixture
def base(aishell, reg):
    name = f"{reg.host}/busybox:latest"
    aishell("pull", name, user="unpriv")
    return name


def test_failed_build_leaves_a_running_container_its_layers(aishell, reg, images, push, base):
    other = push(images.busybox, reg, "leases/other:latest")
    aishell("pull", other, user="unpriv")
    _, other_trees = image_parts(aishell.store, other)
    _, base_trees = image_parts(aishell.store, base)
    assert not set(other_trees) & set(base_trees)
    out = aishell.make_dir(os.path.join(aishell.workdir, "out"))
    ctx = make_context(aishell, {"Dockerfile": gated("fail", f"FROM {base}\n", "RUN false\n")})
    script = ("ls /bin | wc -l > /out/before; until [ -e /out/go ]; do sleep 0.02; done; "
              "ls /bin | wc -l > /out/after")
    for rnd in range(ROUNDS):
        # The exec unpacks its trees again, after the build started.
        for tree in other_trees:
            shutil.rmtree(os.path.join(aishell.store, "layers", tree), ignore_errors=True)
        for name in ("before", "after", "go"):
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        build, gate = gated_build(aishell, ctx, "fail")
        run = aishell.popen("exec", "--image", other, "-v", f"{out}:/out", "--", "sh", "-c", script,
                            user="unpriv", env=MODE)
        wait_for(lambda: os.path.getsize(os.path.join(out, "before")) > 0
                 if os.path.exists(os.path.join(out, "before")) else run.poll() is not None,
                 timeout=60, what="the container to start")
        assert run.poll() is None, run.communicate()
        open_gate(gate)
        _, err = build.communicate(timeout=120)
        assert build.returncode == 1 and "false: the command returned exit status 1" in err, err
        open(os.path.join(out, "go"), "w").close()
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, f"round {rnd}: {stderr}"
        before = int(open(os.path.join(out, "before")).read())
        after = int(open(os.path.join(out, "after")).read())
        assert before > 30 and after == before, f"round {rnd}: /bin had {before} entries, then {after}"
        close_gate(gate)
        assert_nothing_left_over(aishell.store)


def test_a_failing_build_leaves_a_concurrent_build_its_layers(aishell, base):
    for rnd in range(ROUNDS):
        # New steps every round: each build makes layers of its own.
        failing = make_context(aishell, {"Dockerfile": gated("a", f"FROM {base}\nRUN echo a{rnd} > /a\n", "RUN false\n")},
                               name="ctx-a")
        passing = make_context(aishell, {"Dockerfile": gated("b", f"FROM {base}\nRUN echo b{rnd} > /b\n",
                                                             "RUN cat /b > /b2\n")}, name="ctx-b")
        a, gate_a = gated_build(aishell, failing, "a")
        b, gate_b = gated_build(aishell, passing, "b", "-t", f"b:{rnd}")
        open_gate(gate_a)
        _, err = a.communicate(timeout=120)
        assert a.returncode == 1 and "false: the command returned exit status 1" in err, err
        open_gate(gate_b)
        _, err = b.communicate(timeout=120)
        assert b.returncode == 0, f"round {rnd}: {err}"
        close_gate(gate_a)
        close_gate(gate_b)
        r = aishell("exec", "--image", f"b:{rnd}", "--", "cat", "/b2", user="unpriv", env=MODE)
        assert r.stdout == f"b{rnd}\n"
        assert_nothing_left_over(aishell.store)
