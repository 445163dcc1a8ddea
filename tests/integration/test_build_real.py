"""aishell build on Dockerfiles written the way real projects write them, as the unprivileged
user: a CI base image on busybox (a non-root user made as minimal images make one: a passwd
line, a home, chown; a cache filled then cleaned
in a later layer, USER/WORKDIR/ENV), and a global base on a real Debian foundation
(debootstrap --variant=minbase bookworm pushed to the loopback registry) with
`apt-get update && apt-get install` and `useradd`, fetching from Debian's mirror.

Each image is checked by skopeo inspect, umoci unpack (its tree against the expected listing of
the parts the Dockerfile controls), its layer tars (whiteouts, owners) and `aishell exec`.
The Debian foundation is cached on disk (test_unpack_debian.debian_layout, shared with
scripts/bench); only the first run on a machine pays for debootstrap."""
import gzip
import io
import os
import re
import tarfile

import pytest

from helpers.build import (build, final_entries, image_id, layer_members, make_context,
                           manifest_and_config, step_lines, tree)
from helpers.checks import skopeo_inspect, umoci_unpack
from helpers.store import read_blob, verify_store
from helpers.util import run
from test_unpack_debian import _layer_paths, debian_layout

# Single mode maps only the caller (container root). Root emulation (src/runtime/fakeroot.*:
# chown recorded into the layer, set*id faked, apt kept root) makes apt-get and useradd work,
# and a RUN under a non-root USER runs as root that the get*id family reports as USER, its new
# files USER's in the layer.
def mode_params():
    return [pytest.param("subuid", id="subuid"), pytest.param("single", id="single")]


# --- a CI base image ---------------------------------------------------------------------------
CI_DOCKERFILE = """\
FROM {base}
ENV CI=true LANG=C.UTF-8
RUN echo 'ci:x:1000:1000:CI runner:/home/ci:/bin/sh' >> /etc/passwd && echo 'ci:x:1000:' >> /etc/group \\
 && mkdir -p /home/ci && chown -R ci:ci /home/ci && chmod 750 /home/ci
RUN mkdir -p /var/cache/ci/pkgs /opt/tools && for i in 1 2 3; do echo pkg$i > /var/cache/ci/pkgs/p$i.tar; done \\
 && echo 'echo ci-tool ok' > /opt/tools/ci-tool && chmod 755 /opt/tools/ci-tool && echo scratch > /tmp/build-scratch
RUN rm -rf /var/cache/ci/pkgs/* /tmp/build-scratch && echo cleaned > /var/cache/ci/CLEANED
ENV PATH=/opt/tools:$PATH
USER ci
WORKDIR /home/ci/workspace
RUN id -un > whoami && touch .ready
CMD ["sh"]
"""


@pytest.mark.parametrize("mode", mode_params())
def test_ci_base_image_with_non_root_user_and_cleaned_cache(aishell, reg, mode, tmp_path):
    base = f"{reg.host}/busybox:latest"
    ctx = make_context(aishell, {"Dockerfile": CI_DOCKERFILE.format(base=base)})
    r = build(aishell, ctx, "-t", "ci:base", mode=mode)
    store = aishell.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "ci:base")
    assert image_id(r) == manifest["config"]["digest"]
    c = config["config"]
    assert c["User"] == "ci" and c["WorkingDir"] == "/home/ci/workspace" and c["Cmd"] == ["sh"]
    assert "CI=true" in c["Env"] and "LANG=C.UTF-8" in c["Env"]
    assert "PATH=/opt/tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in c["Env"], c["Env"]

    # The clean-up RUN's layer deletes what an earlier layer made: whiteouts, not copies.
    layers = [layer_members(store, d) for d in manifest["layers"]]
    cleanup = next(l for l in layers if "var/cache/ci/CLEANED" in l)
    for name in ("var/cache/ci/pkgs/.wh.p1.tar", "var/cache/ci/pkgs/.wh.p2.tar",
                 "var/cache/ci/pkgs/.wh.p3.tar", "tmp/.wh.build-scratch"):
        assert name in cleanup and cleanup[name].isfile() and cleanup[name].size == 0, (name, sorted(cleanup))
    assert not any(n.startswith("var/cache/ci/pkgs/p") for n in cleanup), sorted(cleanup)

    info = skopeo_inspect(store, "ci:base")
    assert info["Layers"] == [d["digest"] for d in manifest["layers"]]
    assert "CI=true" in info["Env"]

    rootfs = umoci_unpack(store, "ci:base", tmp_path / "bundle")
    assert tree(rootfs, "/var/cache/ci") == {"/var/cache/ci/pkgs": "dir", "/var/cache/ci/CLEANED": "file"}
    assert tree(rootfs, "/home/ci") == {"/home/ci/workspace": "dir", "/home/ci/workspace/whoami": "file",
                                        "/home/ci/workspace/.ready": "file"}
    assert tree(rootfs, "/opt") == {"/opt/tools": "dir", "/opt/tools/ci-tool": "file"}
    assert not os.path.exists(os.path.join(rootfs, "tmp/build-scratch"))
    assert open(os.path.join(rootfs, "home/ci/workspace/whoami")).read() == "ci\n"
    passwd = open(os.path.join(rootfs, "etc/passwd")).read()
    assert re.search(r"^ci:x:1000:1000:CI runner:/home/ci:/bin/sh$", passwd, re.M), passwd

    # Owners: the user's home and what it made there belong to it; WORKDIR made the workspace
    # for the USER of the moment (BuildKit: mkdir with the image's user).
    final = final_entries(store, manifest)
    for path in ("/home/ci", "/home/ci/workspace", "/home/ci/workspace/whoami", "/home/ci/workspace/.ready"):
        assert (final[path].uid, final[path].gid) == (1000, 1000), (path, final[path].uid, final[path].gid)
    assert (final["/opt/tools/ci-tool"].uid, final["/opt/tools/ci-tool"].mode & 0o7777) == (0, 0o755)

    # From /: a run elsewhere works in its project dir, not in the image's WORKDIR.
    r = aishell("exec", "--image", "ci:base", "--", "sh", "-c",
                "id -un; pwd; echo $CI; ls -A /var/cache/ci/pkgs | wc -l; ci-tool",
                user="unpriv", env={"AISHELL_USERNS": mode}, cwd="/")
    assert r.stdout.split("\n") == ["ci", "/home/ci/workspace", "true", "0", "ci-tool ok", ""], r.stdout


@pytest.mark.parametrize("mode", mode_params())
def test_workdir_after_user_is_made_for_that_user(aishell, reg, mode):
    """BuildKit's WORKDIR makes a missing directory with the image's USER as owner (llb.Mkdir
    WithUser), so `USER ci` + `WORKDIR /work` + `RUN touch x` works as in Docker."""
    base = f"{reg.host}/busybox:latest"
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN echo 'ci:x:1000:1000::/home/ci:/bin/sh' >> /etc/passwd && echo 'ci:x:1000:' >> /etc/group && mkdir -p /home/ci \\
 && chown ci:ci /home/ci
USER ci
WORKDIR /home/ci/workspace/sub
RUN touch made-by-ci
USER 0
WORKDIR /srv/root-owned
"""})
    build(aishell, ctx, "-t", "wd:1", mode=mode)
    manifest, _ = manifest_and_config(aishell.store, "wd:1")
    final = final_entries(aishell.store, manifest)
    owners = {p: (final[p].uid, final[p].gid, final[p].mode & 0o7777)
              for p in ("/home/ci/workspace", "/home/ci/workspace/sub", "/home/ci/workspace/sub/made-by-ci",
                        "/srv", "/srv/root-owned")}
    assert owners == {"/home/ci/workspace": (1000, 1000, 0o755), "/home/ci/workspace/sub": (1000, 1000, 0o755),
                      "/home/ci/workspace/sub/made-by-ci": (1000, 1000, 0o644),
                      "/srv": (0, 0, 0o755), "/srv/root-owned": (0, 0, 0o755)}, owners


# --- a global base on Debian ---------------------------------------------------------------------
# `tree`: a small package (one binary, libc only) that minbase does not have.
DEBIAN_DOCKERFILE = """\
FROM {foundation}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends tree \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN useradd -m -s /bin/bash -u 1000 dev
LABEL org.example.base=global
"""


def foundation_lists(layout):
    """Names directly in /var/lib/apt/lists of the foundation (its single umoci layer)."""
    names = set()
    for path in _layer_paths(layout):
        with tarfile.open(path, "r:*") as tar:
            for ti in tar:
                rel = os.path.normpath("/" + ti.name.lstrip("/"))
                if os.path.dirname(rel) == "/var/lib/apt/lists":
                    names.add(os.path.basename(rel))
    return names


@pytest.fixture(scope="module")
def debian_foundation(reg):
    layout = debian_layout()
    run(["skopeo", "copy", "--quiet", *reg.skopeo_dest_args(admin=True),
         f"oci:{layout}:bookworm", f"docker://{reg.host}/debian:bookworm"], timeout=300)
    return f"{reg.host}/debian:bookworm", layout


@pytest.mark.parametrize("mode", mode_params())
def test_debian_global_base_with_apt_and_useradd(aishell, debian_foundation, mode, tmp_path):
    foundation, layout = debian_foundation
    ctx = make_context(aishell, {"Dockerfile": DEBIAN_DOCKERFILE.format(foundation=foundation)})
    r = build(aishell, ctx, "-t", "debian-base", mode=mode, timeout=300)
    assert re.search(r"Setting up tree ", r.stdout + r.stderr), r.stdout[-3000:] + r.stderr[-3000:]
    store = aishell.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "debian-base")
    # The foundation's one layer, the apt layer, the useradd layer.
    assert len(manifest["layers"]) == 3, manifest["layers"]
    assert config["config"]["Labels"] == {"org.example.base": "global"}
    assert "DEBIAN_FRONTEND=noninteractive" in config["config"]["Env"]
    info = skopeo_inspect(store, "debian-base")
    assert info["Layers"] == [d["digest"] for d in manifest["layers"]] and info["Os"] == "linux"

    # The apt layer: the package's files; the lists `apt-get update` fetched are gone again
    # (made and removed in one RUN: not in the layer), and those the foundation had (debootstrap
    # leaves its Packages file) are whiteouts. The lists dir itself stays.
    apt_layer = layer_members(store, manifest["layers"][1])
    assert "usr/bin/tree" in apt_layer and apt_layer["usr/bin/tree"].mode & 0o111
    in_lists = sorted(n for n in apt_layer if n.startswith("var/lib/apt/lists/"))
    wanted = sorted(f"var/lib/apt/lists/.wh.{name}" for name in foundation_lists(layout))
    assert wanted and in_lists == wanted, (in_lists, wanted)
    assert all(apt_layer[n].isfile() and apt_layer[n].size == 0 for n in wanted)
    assert "var/lib/dpkg/status" in apt_layer
    user_layer = layer_members(store, manifest["layers"][2])
    assert {"etc/passwd", "etc/group", "etc/shadow", "home/dev"} <= set(user_layer), sorted(user_layer)

    final = final_entries(store, manifest)
    for path in ("/home/dev", "/home/dev/.bashrc", "/home/dev/.profile"):
        assert (final[path].uid, final[path].gid) == (1000, 1000), (path, final[path].uid)
    assert final["/usr/bin/tree"].uid == 0

    rootfs = umoci_unpack(store, "debian-base", tmp_path / "bundle")
    assert tree(rootfs, "/home") == {"/home/dev": "dir", "/home/dev/.bashrc": "file",
                                     "/home/dev/.profile": "file", "/home/dev/.bash_logout": "file"}
    assert tree(rootfs, "/var/lib/apt/lists") == {}
    assert os.path.isdir(os.path.join(rootfs, "var/lib/apt/lists"))
    assert re.search(r"^dev:x:1000:1000::/home/dev:/bin/bash$",
                     open(os.path.join(rootfs, "etc/passwd")).read(), re.M)
    status = open(os.path.join(rootfs, "var/lib/dpkg/status")).read()
    assert re.search(r"^Package: tree\nStatus: install ok installed$", status, re.M)

    user = ["--user", "0"] if mode == "single" else []
    r = aishell("exec", "--image", "debian-base", *user, "--", "sh", "-c",
                "id dev; tree --version; mkdir -p /tmp/t/a && touch /tmp/t/a/f && tree -i --noreport /tmp/t",
                user="unpriv", env={"AISHELL_USERNS": mode})
    lines = r.stdout.splitlines()
    assert lines[0] == "uid=1000(dev) gid=1000(dev) groups=1000(dev)", r.stdout
    assert lines[1].startswith("tree v2."), r.stdout
    assert lines[2:] == ["/tmp/t", "a", "f"], r.stdout
    if mode == "subuid":
        r = aishell("exec", "--image", "debian-base", "--user", "dev", "--", "sh", "-c", "id -un; cd && pwd",
                    user="unpriv", env={"AISHELL_USERNS": mode})
        assert r.stdout == "dev\n/home/dev\n"

    # An unchanged rebuild is all cached (no network), the same image.
    again = build(aishell, ctx, "-t", "debian-base2", mode=mode)
    assert all(line.startswith("CACHED") for line in step_lines(again.stderr)[1:]), again.stderr
    assert image_id(again) == manifest["config"]["digest"]


# --- a developer image: TLS, curl and git (issue 13) -----------------------------------------------
# ca-certificates' update-ca-certificates links hash names to certificate names that are not
# ASCII (`988a38cb.0 -> NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem`): the layer must hold them.
DEV_TOOLS_DOCKERFILE = """\
FROM {foundation}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl git \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""
NETLOCK = "NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem".encode()


@pytest.mark.parametrize("mode", mode_params())
def test_debian_apt_install_ca_certificates_curl_git(aishell, debian_foundation, mode):
    foundation, _ = debian_foundation
    ctx = make_context(aishell, {"Dockerfile": DEV_TOOLS_DOCKERFILE.format(foundation=foundation)})
    build(aishell, ctx, "-t", "dev:tools", mode=mode, timeout=600)
    store = aishell.store
    assert not verify_store(store)
    manifest, _ = manifest_and_config(store, "dev:tools")

    # Python's tarfile reads the names back as the bytes update-ca-certificates made.
    data = read_blob(store, manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), encoding="utf-8", errors="surrogateescape") as t:
        certs = {m.name.encode("utf-8", "surrogateescape"): m for m in t.getmembers()
                 if m.name.startswith("etc/ssl/certs/")}
    assert certs[b"etc/ssl/certs/988a38cb.0"].issym()
    assert certs[b"etc/ssl/certs/988a38cb.0"].linkname.encode("utf-8", "surrogateescape") == NETLOCK
    assert certs[b"etc/ssl/certs/" + NETLOCK].issym()

    user = ["--user", "0"] if mode == "single" else []
    r = aishell("exec", "--image", "dev:tools", *user, "--", "sh", "-c",
                "git --version && curl --version | head -n1 && readlink /etc/ssl/certs/988a38cb.0 | od -An -tx1 -v"
                " && test -s /etc/ssl/certs/ca-certificates.crt && test -r /etc/ssl/certs/988a38cb.0",
                user="unpriv", env={"AISHELL_USERNS": mode})
    lines = r.stdout.splitlines()
    assert lines[0].startswith("git version 2."), r.stdout
    assert lines[1].startswith("curl 7."), r.stdout
    assert bytes.fromhex("".join(lines[2:]).replace(" ", "")) == NETLOCK + b"\n", r.stdout
