"""aishell build, multi-stage: a builder/runtime image, COPY --from a stage and from an image
reference (pulled from the loopback registry when the store lacks it), --target building only
the stages it needs, COPY --from with --chown/--chmod, a stage used as another stage's FROM.

Every build runs as the unprivileged user, in both user-namespace modes; the images are read
back by skopeo, umoci and Python's tarfile, and run with `aishell exec`."""
import json
import os
import re
import stat

import pytest

from helpers.build import (MODES, build, module_runner, final_entries, image_id, index_digest,
                           layer_members, make_context, manifest_and_config, step_lines, tree)
from helpers.checks import skopeo_inspect, umoci_unpack
from helpers.registry import start_registry
from helpers.runtime_images import ensure_runtime_images
from helpers.store import image_names, read_blob, verify_store


# Single mode maps only the caller: lchown to any other id fails (EINVAL) and the copy keeps
# root on disk, so `aishell exec` shows 0:0 there; the intended owners are recorded beside the
# tree (src/oci/owner_table.hpp) and the layer tars carry them, as umoci sees them.


def rootless_owner(path):
    """(uid, gid) of an entry of a `umoci unpack --rootless` tree: umoci keeps owners it cannot
    set in the user.rootlesscontainers xattr (rootlesscontainers.proto: uid = 1, gid = 2,
    varints; absent means 0:0, an absent field 0, 4294967295 "unchanged"), never on symlinks."""
    try:
        data = os.getxattr(path, "user.rootlesscontainers", follow_symlinks=False)
    except OSError:
        st = os.lstat(path)
        return (st.st_uid, st.st_gid)
    fields, i = {}, 0
    while i < len(data):
        key, shift, value = data[i], 0, 0
        i += 1
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7f) << shift
            shift += 7
            if not b & 0x80:
                break
        fields[key >> 3] = value
    return (fields.get(1, 0), fields.get(2, 0))


@pytest.fixture(scope="module")
def reg(session_dir, images):
    """One loopback registry for the module: rt-busybox as busybox:latest, the umoci-built
    `hello` fixture (/hello.txt) as hello:1."""
    rt = ensure_runtime_images()
    r = start_registry("http", base_dir=session_dir)
    rt.push(rt.busybox, r, "busybox:latest")
    images.push(images.hello, r, "hello:1")
    yield r
    r.stop()


@pytest.fixture
def base(reg):
    return f"{reg.host}/busybox:latest"


# --- a builder/runtime image -------------------------------------------------------------------
APP_SH = "#!/bin/sh\necho \"app @VERSION@ as $(id -u):$(id -g)\"\n"

BUILDER_RUNTIME = """\
FROM {base} AS builder
WORKDIR /src
COPY app.sh VERSION ./
RUN mkdir -p /out/lib/plugins && sed "s/@VERSION@/$(cat VERSION)/" app.sh > /out/app && chmod 755 /out/app \\
 && echo data > /out/lib/data && echo plug > /out/lib/plugins/p1 && ln -s data /out/lib/current \\
 && dd if=/dev/zero of=/src/objects.bin bs=1024 count=64 2>/dev/null

FROM {base} AS runtime
RUN echo 'app:x:1234:2345:app:/home/app:/bin/sh' >> /etc/passwd && echo 'appgrp:x:2345:' >> /etc/group
COPY --from=builder /out/app /usr/local/bin/app
COPY --from=builder --chown=app:appgrp --chmod=0750 /out/lib /opt/app/lib
COPY --from=BUILDER --chown=1234:appgrp /out/app /opt/app/bin/
USER app
CMD ["app"]
"""

# What the runtime image has under /opt, exactly: nothing of the builder's /src or /out.
OPT_LISTING = {
    "/opt/app": "dir", "/opt/app/bin": "dir", "/opt/app/bin/app": "file",
    "/opt/app/lib": "dir", "/opt/app/lib/data": "file", "/opt/app/lib/current": "link",
    "/opt/app/lib/plugins": "dir", "/opt/app/lib/plugins/p1": "file",
}


@pytest.fixture(scope="module", params=MODES)
def runtime_image(request, session_dir, _binary_checked, unpriv_user, reg):
    """The builder/runtime image built once per mode: (runner, mode, build result)."""
    mode = request.param
    runner = module_runner(session_dir, _binary_checked, unpriv_user, "runtime-image-" + mode)
    ctx = make_context(runner, {"Dockerfile": BUILDER_RUNTIME.format(base=f"{reg.host}/busybox:latest"),
                                "app.sh": APP_SH, "VERSION": "1.2.3\n"})
    return runner, mode, build(runner, ctx, "-t", "app:runtime", mode=mode)


def test_builder_runtime_image(runtime_image, tmp_path):
    runner, mode, r = runtime_image
    store = runner.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "app:runtime")
    assert image_id(r) == manifest["config"]["digest"]
    # base (2 layers) + RUN + three COPYs: the builder's layers are not part of the image.
    assert len(manifest["layers"]) == 6, manifest["layers"]
    assert config["config"]["User"] == "app" and config["config"]["Cmd"] == ["app"]
    assert all("/src" not in h.get("created_by", "") for h in config["history"]), config["history"]

    info = skopeo_inspect(store, "app:runtime")
    assert info["Layers"] == [d["digest"] for d in manifest["layers"]]

    rootfs = umoci_unpack(store, "app:runtime", tmp_path / "bundle")
    t = tree(rootfs)
    assert tree(rootfs, "/opt") == OPT_LISTING
    assert t.get("/usr/local/bin/app") == "file"
    for absent in ("/src", "/out"):
        assert absent not in t, absent
    assert open(os.path.join(rootfs, "opt/app/lib/plugins/p1")).read() == "plug\n"
    assert os.readlink(os.path.join(rootfs, "opt/app/lib/current")) == "data"
    # Modes as umoci applied them: --chmod on every copied file and directory, 0755 for the
    # parents the copy made, the builder's own mode without --chmod.
    modes = {p: stat.S_IMODE(os.lstat(os.path.join(rootfs, p.lstrip("/"))).st_mode)
             for p, kind in OPT_LISTING.items() if kind != "link"}
    assert modes == {"/opt/app": 0o755, "/opt/app/bin": 0o755, "/opt/app/bin/app": 0o755,
                     "/opt/app/lib": 0o750, "/opt/app/lib/data": 0o750, "/opt/app/lib/plugins": 0o750,
                     "/opt/app/lib/plugins/p1": 0o750}, {k: oct(v) for k, v in modes.items()}

    # Single mode maps only root: the image's USER cannot run there, root can.
    user = ["--user", "0:0"] if mode == "single" else []
    out = runner("exec", "--image", "app:runtime", *user, user="unpriv", env={"AISHELL_USERNS": mode})
    assert out.stdout == ("app 1.2.3 as 0:0\n" if mode == "single" else "app 1.2.3 as 1234:2345\n"), \
        out.stdout + out.stderr


def test_builder_runtime_image_owners(runtime_image, tmp_path):
    runner, mode, _ = runtime_image
    store = runner.store
    manifest, _ = manifest_and_config(store, "app:runtime")
    # Owners as the layer tars carry them (umoci --rootless keeps owners in xattrs).
    final = final_entries(store, manifest)
    owners = {p: (final[p].uid, final[p].gid) for p in ["/usr/local/bin/app", "/opt"] + list(OPT_LISTING)}
    assert owners == {
        # Copied from the builder without --chown: the source's owner (root).
        "/usr/local/bin/app": (0, 0),
        # --chown=app:appgrp (names from the runtime stage's /etc/passwd and /etc/group) on every
        # copied entry and on the parents the copy made (BuildKit's MkdirAll with the owner).
        "/opt": (1234, 2345), "/opt/app": (1234, 2345), "/opt/app/lib": (1234, 2345),
        "/opt/app/lib/data": (1234, 2345), "/opt/app/lib/plugins": (1234, 2345),
        "/opt/app/lib/plugins/p1": (1234, 2345), "/opt/app/lib/current": (1234, 2345),
        # --chown=1234:appgrp
        "/opt/app/bin": (1234, 2345), "/opt/app/bin/app": (1234, 2345)}
    # /opt and /opt/app are in three layers: the two later COPYs copied them up and keep the
    # owner the first one gave them.
    for layer in manifest["layers"][-2:]:
        members = layer_members(store, layer)
        assert (members["opt"].uid, members["opt/app"].uid) == (1234, 1234), layer

    # umoci applies the layers the same way (rootless: the owners in xattrs).
    rootfs = umoci_unpack(store, "app:runtime", tmp_path / "bundle")
    unpacked = {p: rootless_owner(os.path.join(rootfs, p.lstrip("/")))
                for p in owners if not os.path.islink(os.path.join(rootfs, p.lstrip("/")))}
    assert unpacked == {p: o for p, o in owners.items() if p != "/opt/app/lib/current"}

    # What a container sees: the owners on disk, which single mode cannot give (one id mapped).
    out = runner("exec", "--image", "app:runtime", "--user", "0:0", "--", "stat", "-c", "%n %u:%g",
                 *(["/usr/local/bin/app"] + sorted(OPT_LISTING)), user="unpriv", env={"AISHELL_USERNS": mode})
    seen = dict(line.split(" ") for line in out.stdout.splitlines())
    expected = {p: "%d:%d" % o for p, o in owners.items() if p != "/opt"}
    if mode == "single":
        expected = {p: "0:0" for p in expected}
    assert seen == expected, out.stdout + out.stderr


@pytest.mark.parametrize("mode", MODES)
def test_copy_chown_by_user_name_takes_its_primary_group(aishell, base, mode):
    """BuildKit's readUser: --chown=NAME is the user's uid and primary gid from the target's
    /etc/passwd; --chown=UID alone is UID:UID."""
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base} AS src
RUN echo x > /x
FROM {base}
RUN echo 'app:x:1234:2345:app:/home/app:/bin/sh' >> /etc/passwd && echo 'appgrp:x:2345:' >> /etc/group
COPY --from=src --chown=app /x /by-name
COPY --from=src --chown=1234 /x /by-id
COPY --chown=app f /ctx-by-name
""", "f": "f"})
    build(aishell, ctx, "-t", "own:1", mode=mode)
    manifest, _ = manifest_and_config(aishell.store, "own:1")
    final = final_entries(aishell.store, manifest)
    owners = {p: (final[p].uid, final[p].gid) for p in ("/by-name", "/by-id", "/ctx-by-name")}
    assert owners == {"/by-name": (1234, 2345), "/by-id": (1234, 1234), "/ctx-by-name": (1234, 2345)}


# --- COPY --from an image reference ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_copy_from_image_ref_pulls_it_once_and_local_names_need_no_registry(aishell, reg, base, mode, tmp_path):
    hello = f"{reg.host}/hello:1"
    first_ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
COPY --from={hello} /hello.txt /greeting.txt
COPY --from={hello} --chmod=0600 /hello.txt /private/
"""})
    first = r = build(aishell, first_ctx, "-t", "greet:1", mode=mode)
    # Pulled when the store lacks it, and only once: the second COPY finds it in the store.
    assert len(re.findall(rf"^pulling {re.escape(hello)}$", r.stderr, re.M)) == 1, r.stderr
    assert hello in image_names(aishell.store)
    rootfs = umoci_unpack(aishell.store, "greet:1", tmp_path / "greet")
    assert open(os.path.join(rootfs, "greeting.txt")).read() == "hello from a fixture\n"
    assert stat.S_IMODE(os.stat(os.path.join(rootfs, "private/hello.txt")).st_mode) == 0o600
    manifest, _ = manifest_and_config(aishell.store, "greet:1")
    assert len(manifest["layers"]) == 4
    # The image's layers are the base's plus the two copies: nothing of the source image.
    hello_manifest = json.loads(read_blob(aishell.store, index_digest(aishell.store, hello)))
    assert not {d["digest"] for d in hello_manifest["layers"]} & {d["digest"] for d in manifest["layers"]}

    # An image built here, named only locally, is a --from source without any pull.
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nCOPY --from=greet:1 /greeting.txt /again.txt\n"},
                       name="ctx2")
    r = build(aishell, ctx, "-t", "greet:2", mode=mode)
    assert "pulling" not in r.stderr, r.stderr
    rootfs = umoci_unpack(aishell.store, "greet:2", tmp_path / "greet2")
    assert open(os.path.join(rootfs, "again.txt")).read() == "hello from a fixture\n"

    # A rebuild of the first file: every step cached, the same image, no pull.
    again = build(aishell, first_ctx, "-t", "greet:3", mode=mode)
    assert "pulling" not in again.stderr, again.stderr
    assert image_id(again) == image_id(first)
    assert [line.startswith("CACHED ") for line in step_lines(again.stderr)] == [False, True, True], again.stderr


# --- --target and stages as FROM bases ---------------------------------------------------------
TARGETS = """\
FROM {base} AS deps
ENV DEPS_HOME=/deps
WORKDIR /deps
RUN echo deps-ran && echo deps > /deps/list

FROM deps AS Builder
RUN echo builder-ran && cat $DEPS_HOME/list > /built && echo built >> /built

FROM {base} AS broken
RUN echo broken-ran && exit 9

FROM {base} AS tests
COPY --from=builder /built /built
RUN echo tests-ran && exit 4

FROM {base} AS final
COPY --from=builder /built /app/built
COPY --from=deps /deps/list /app/deps-list
"""


@pytest.mark.parametrize("mode", MODES)
def test_target_builds_only_the_stages_it_needs(aishell, base, mode, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": TARGETS.format(base=base)})
    store = aishell.store

    # --target builder: deps and builder only (deps as builder's FROM base).
    r = build(aishell, ctx, "--target", "builder", "-t", "t:builder", mode=mode)
    out = r.stdout + r.stderr
    assert "deps-ran" in out and "builder-ran" in out
    for never in ("broken-ran", "tests-ran", "exit 9", "exit 4", "/app/built"):
        assert never not in out, (never, out)
    steps = step_lines(r.stderr)
    # FROM, ENV, WORKDIR, RUN of deps; FROM, RUN of builder.
    assert len(steps) == 6 and all(line.split("]")[0].endswith("/6") for line in steps), steps

    # The builder image is the deps stage's image plus one layer, with its ENV and WORKDIR.
    b_manifest, b_config = manifest_and_config(store, "t:builder")
    build(aishell, ctx, "--target", "deps", "-t", "t:deps", mode=mode)
    d_manifest, _ = manifest_and_config(store, "t:deps")
    assert b_manifest["layers"][:-1] == d_manifest["layers"]
    assert "DEPS_HOME=/deps" in b_config["config"]["Env"] and b_config["config"]["WorkingDir"] == "/deps"
    rootfs = umoci_unpack(store, "t:builder", tmp_path / "builder")
    assert open(os.path.join(rootfs, "built")).read() == "deps\nbuilt\n"

    # The default target (the last stage) needs builder and deps, never broken nor tests; deps
    # runs once although two stages use it.
    r = build(aishell, ctx, "--no-cache", "-t", "t:final", mode=mode)
    out = r.stdout + r.stderr
    assert "broken-ran" not in out and "tests-ran" not in out
    assert len(re.findall(r"^deps-ran$", r.stdout + r.stderr, re.M)) == 1, out
    rootfs = umoci_unpack(store, "t:final", tmp_path / "final")
    assert tree(rootfs, "/app") == {"/app/built": "file", "/app/deps-list": "file"}
    _, f_config = manifest_and_config(store, "t:final")
    assert not any(e.startswith("DEPS_HOME=") for e in f_config["config"].get("Env", []))

    # The stages left out really fail: the build of --target tests runs its RUN and stops there.
    r = build(aishell, ctx, "--target", "tests", "-t", "t:tests", mode=mode, check=False)
    assert r.returncode == 1 and "tests-ran" in r.stdout + r.stderr and "broken-ran" not in r.stdout + r.stderr
    assert "t:tests" not in image_names(store)
