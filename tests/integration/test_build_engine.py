"""aishell build: Dockerfiles built into the store as the unprivileged user, on the rt-busybox
fixture image pushed to a local registry (the build pulls it). Every built image is read back by
independent tools: skopeo inspect, umoci unpack (its tree against the expected listing) and
Python's tarfile over the layer blobs (whiteouts, opaque markers, owners, modes)."""
import io
import os
import re
import stat
import tarfile

import pytest

from helpers.build import (build, image_id, index_digest, layer_members, make_context, manifest_and_config,
                           tree)
from helpers.checks import assert_one_error, assert_store_unchanged, skopeo_inspect, umoci_unpack
from helpers.store import snapshot, verify_store


@pytest.fixture
def base(aishell, registry, rt_images):
    """rt-busybox in a local registry; its reference (a build pulls it)."""
    reg = registry("http")
    rt_images.push(rt_images.busybox, reg, "busybox:latest")
    return f"{reg.host}/busybox:latest"


def files_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in (("x/y.txt", b"from the tar\n"), ("x/z.txt", b"zz\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.uid = info.gid = 42
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


DOCKERFILE = """\
FROM {base}
ARG GREETING=hello
ENV APP=/app NAME=${{GREETING}}-world
WORKDIR $APP
COPY --chown=1000:1000 --chmod=0640 conf.txt ./conf.txt
COPY dir/ /app/dir/
ADD files.tar.gz /opt/
RUN mkdir -p /data/sub && echo one > /data/sub/f && ln /data/sub/f /data/hard && ln -s sub/f /data/sym \\
 && chmod 4755 /data/sub/f && echo bye > /data/gone && mkdir /rep && touch /rep/old && echo $NAME > /app/name
RUN rm /data/gone /app/dir/b.txt && rm -rf /rep && mkdir /rep && touch /rep/new
USER 1000:1000
LABEL org.example.k="v $APP"
EXPOSE 8080 53/udp
CMD ["-c", "echo hi"]
ENTRYPOINT ["/bin/sh"]
STOPSIGNAL SIGTERM
"""


def test_build_layers_config_and_independent_tools(aishell, base, tmp_path):
    ctx = make_context(aishell, {
        "Dockerfile": DOCKERFILE.format(base=base),
        "conf.txt": "conf\n", "dir/a.txt": "a\n", "dir/b.txt": "b\n", "dir/skip.log": "no\n",
        "files.tar.gz": files_tar(), ".dockerignore": "*.md\n**/*.log\n", "README.md": "x",
    })
    r = build(aishell, ctx, "-t", "built:1", "-t", "built:alias")
    assert "[1/15] FROM " in r.stderr and "[8/15] RUN /bin/sh -c mkdir" in r.stderr, r.stderr
    store = aishell.store
    manifest, config = manifest_and_config(store, "built:1")
    assert image_id(r) == manifest["config"]["digest"]
    assert index_digest(store, "built:alias") == index_digest(store, "built:1")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert not verify_store(store)

    c = config["config"]
    assert c["User"] == "1000:1000" and c["WorkingDir"] == "/app"
    assert c["Entrypoint"] == ["/bin/sh"] and c["Cmd"] == ["-c", "echo hi"]
    assert c["Labels"]["org.example.k"] == "v /app"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["StopSignal"] == "SIGTERM"
    assert "NAME=hello-world" in c["Env"] and "APP=/app" in c["Env"]
    assert not any(e.startswith("GREETING=") for e in c["Env"])  # ARGs never land in the config
    hist = config["history"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
    assert len([h for h in hist if not h.get("empty_layer")]) == len(manifest["layers"])
    assert any(h["created_by"].startswith("ENV APP=/app") and h["empty_layer"] for h in hist)

    info = skopeo_inspect(store, "built:1")
    assert info["Digest"] == index_digest(store, "built:1") and info["Labels"]["org.example.k"] == "v /app"

    rootfs = umoci_unpack(store, "built:1", tmp_path / "bundle")
    t = tree(rootfs)
    expected = {"/app": "dir", "/app/conf.txt": "file", "/app/dir": "dir", "/app/dir/a.txt": "file",
                "/app/name": "file", "/opt/x/y.txt": "file", "/opt/x/z.txt": "file", "/data/sub/f": "file",
                "/data/hard": "file", "/data/sym": "link", "/rep": "dir", "/rep/new": "file"}
    for path, kind in expected.items():
        assert t.get(path) == kind, (path, t.get(path))
    for gone in ("/data/gone", "/rep/old", "/app/dir/b.txt", "/app/dir/skip.log", "/README.md", "/opt/files.tar.gz"):
        assert gone not in t, gone
    assert open(os.path.join(rootfs, "app/name")).read() == "hello-world\n"
    assert os.readlink(os.path.join(rootfs, "data/sym")) == "sub/f"
    st_f, st_h = os.stat(os.path.join(rootfs, "data/sub/f")), os.stat(os.path.join(rootfs, "data/hard"))
    assert st_f.st_ino == st_h.st_ino
    assert stat.S_IMODE(st_f.st_mode) == 0o4755

    # The layers as tar streams: owners, modes, whiteouts and the opaque marker.
    layers = [layer_members(store, d) for d in manifest["layers"]]
    conf = next(l["app/conf.txt"] for l in layers if "app/conf.txt" in l)
    assert (conf.uid, conf.gid, conf.mode) == (1000, 1000, 0o640)
    y = next(l["opt/x/y.txt"] for l in layers if "opt/x/y.txt" in l)
    assert (y.uid, y.mode) == (42, 0o600)
    last = layers[-1]
    assert "data/.wh.gone" in last and "app/dir/.wh.b.txt" in last
    assert "rep/.wh..wh..opq" in last and "rep/new" in last
    run_layer = next(l for l in layers if "data/sub/f" in l)
    # Entries are sorted, so the first name is the file and the second links to it.
    assert run_layer["data/hard"].isfile() and run_layer["data/sub/f"].islnk()
    assert run_layer["data/sub/f"].linkname == "data/hard"


def test_rebuild_is_cached_and_a_context_change_reruns_only_later_steps(aishell, base):
    ctx = make_context(aishell, {
        "Dockerfile": f"FROM {base}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a2\nCOPY b.txt /b.txt\n"
                      "RUN cat /b.txt > /b2\nLABEL x=y\n",
        "a.txt": "a\n", "b.txt": "b\n"})
    first = build(aishell, ctx, "-t", "c:1")
    second = build(aishell, ctx, "-t", "c:2")
    assert image_id(first) == image_id(second)
    assert index_digest(aishell.store, "c:1") == index_digest(aishell.store, "c:2")
    for n in range(2, 7):
        assert re.search(rf"^CACHED \[{n}/6\]", second.stderr, re.M), second.stderr

    with open(os.path.join(ctx, "b.txt"), "w") as f:
        f.write("b changed\n")
    third = build(aishell, ctx, "-t", "c:3")
    for n in (2, 3):
        assert re.search(rf"^CACHED \[{n}/6\]", third.stderr, re.M), third.stderr
    for n in (4, 5, 6):
        assert re.search(rf"^\[{n}/6\]", third.stderr, re.M), third.stderr
    assert image_id(third) != image_id(first)

    nocache = build(aishell, ctx, "--no-cache", "-t", "c:4")
    assert "CACHED" not in nocache.stderr


def test_multi_stage_copy_from_and_target(aishell, base, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base} AS builder
RUN mkdir /out && echo built > /out/artifact && chmod 750 /out/artifact
FROM {base} AS unused
RUN echo never && exit 7
FROM {base}
COPY --from=builder /out/artifact /usr/local/bin/
COPY --from=0 /out /copied
"""})
    r = build(aishell, ctx, "-t", "ms:final")
    assert "never" not in r.stdout + r.stderr
    rootfs = umoci_unpack(aishell.store, "ms:final", tmp_path / "final")
    assert open(os.path.join(rootfs, "usr/local/bin/artifact")).read() == "built\n"
    assert stat.S_IMODE(os.stat(os.path.join(rootfs, "usr/local/bin/artifact")).st_mode) == 0o750
    assert os.path.isfile(os.path.join(rootfs, "copied/artifact"))

    build(aishell, ctx, "--target", "builder", "-t", "ms:builder")
    rootfs = umoci_unpack(aishell.store, "ms:builder", tmp_path / "builder")
    assert os.path.isfile(os.path.join(rootfs, "out/artifact"))
    assert not os.path.exists(os.path.join(rootfs, "usr/local/bin/artifact"))


def test_single_mode_build(aishell, base, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nCOPY f /f\nRUN echo ran > /r && rm /etc/motd || true\n",
                                 "f": "f\n"})
    build(aishell, ctx, "-t", "single:1", mode="single")
    rootfs = umoci_unpack(aishell.store, "single:1", tmp_path / "b")
    assert open(os.path.join(rootfs, "r")).read() == "ran\n" and os.path.isfile(os.path.join(rootfs, "f"))


def test_failing_run_names_the_step_and_leaves_the_store(aishell, base):
    aishell("pull", base, user="unpriv")
    before = snapshot(aishell.store)
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nCOPY f /f\nRUN echo visible-output && exit 3\n"
                                               "RUN echo after\n", "f": "x"})
    r = build(aishell, ctx, "-t", "bad:1", check=False)
    assert r.returncode == 1
    assert_one_error(r, r"\[3/4\].*status 3")
    assert "visible-output" in r.stdout + r.stderr and "after" not in r.stdout
    assert_store_unchanged(aishell.store, before)


def test_syntax_error_names_its_line(aishell, base):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN true\nFROBNICATE now\n"})
    r = build(aishell, ctx, check=False)
    assert_one_error(r, r"Dockerfile:3:")
