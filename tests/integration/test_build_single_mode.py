"""aishell build in single userns mode (AISHELL_USERNS=single: only the caller is mapped, to
container root; setgroups denied; no subuids), as the unprivileged user. RUN steps run with root
emulation (src/runtime/fakeroot.hpp): the chown family, set*id/setgroups and device mknod succeed
without effect, and apt gets APT::Sandbox::User "root" through an APT_CONFIG file in the
container's /dev tmpfs, which never lands in a layer.

Busybox (Debian's busybox-static: no adduser applet): chown to ids that do not exist in the
namespace, mknod of a device, setgroups/setgid/setuid via su; a RUN under a non-root USER (seen
as that user by the get*id family, its files that user's); chown fails under `aishell exec` as
root in single mode (no emulation there). Debian
(debootstrap minbase bookworm, cached as test_unpack_debian caches it, fetched from Debian's
mirror): `apt-get update && apt-get install` and `useradd -m`."""
import gzip
import io
import os
import re
import tarfile

import pytest

from helpers.build import (build, final_entries, layer_members, make_context, manifest_and_config,
                           step_lines)
from helpers.store import read_blob, verify_store
from helpers.util import run
from test_unpack_debian import debian_layout

APT_CONF = "dev/.aishell-apt.conf"


def layered_text(store, manifest, name):
    """The text of name in the topmost layer that has it."""
    for desc in reversed(manifest["layers"]):
        members = layer_members(store, desc)
        if name in members:
            data = read_blob(store, desc["digest"])
            if desc["mediaType"].endswith("gzip"):
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                return t.extractfile(name).read().decode()
    raise AssertionError(f"{name} is in no layer")


def all_layer_names(store, manifest):
    """Every entry name of every layer."""
    names = set()
    for d in manifest["layers"]:
        names |= set(layer_members(store, d))
    return names


BUSYBOX_DOCKERFILE = """\
FROM {base}
RUN echo 'dev:x:1000:1000::/home/dev:/bin/sh' >> /etc/passwd && echo 'dev:x:1000:' >> /etc/group \\
 && mkdir -p /home/dev && chown dev:dev /home/dev && chown -R 1000:1000 /home/dev \\
 && ln -s /home/dev /home/link && chown -h 1000:1000 /home/link
RUN echo 'alice:x:1001:1001::/home/alice:/bin/sh' >> /etc/passwd && echo 'alice:x:1001:' >> /etc/group \\
 && mkdir /home/alice && chown alice:alice /home/alice && echo chown-ok
RUN chgrp 4242 /etc/group && chown 0:0 /bin/sh && chown -h 77:78 /home/link && ! chown 1 /nonexistent \\
 && echo lower-ok
RUN mknod /tmp/null c 1 3 && mknod /tmp/fifo p && test -p /tmp/fifo && ! test -e /tmp/null && echo mknod-ok
RUN su -s /bin/sh alice -c 'echo su-ran' && echo "apt_config=[$APT_CONFIG]" && ! test -e /{apt_conf}
"""


def test_busybox_chown_mknod_and_su(aishell, reg):
    base = f"{reg.host}/busybox:latest"
    ctx = make_context(aishell, {"Dockerfile": BUSYBOX_DOCKERFILE.format(base=base, apt_conf=APT_CONF)})
    r = build(aishell, ctx, "-t", "single:bb", mode="single")
    out = r.stdout + r.stderr
    for word in ("chown-ok", "lower-ok", "mknod-ok", "su-ran"):
        assert word in out, out[-3000:]
    # No apt-get in busybox: no APT_CONFIG, no file.
    assert "apt_config=[]" in out, out[-3000:]
    store = aishell.store
    assert not verify_store(store)
    manifest, _ = manifest_and_config(store, "single:bb")
    final = final_entries(store, manifest)
    assert {"/home/dev", "/home/link", "/home/alice", "/tmp/fifo"} <= set(final), sorted(final)
    assert final["/tmp/fifo"].isfifo()
    assert "/tmp/null" not in final
    # The owners chown asked for are in the layers' tar headers (recorded, not on disk): new
    # entries, a symlink (-h), and entries of lower layers (copied up, as a real chown would).
    owners = {p: (final[p].uid, final[p].gid) for p in ("/home/dev", "/home/link", "/home/alice", "/etc/group",
                                                        "/etc/passwd", "/tmp/fifo")}
    assert owners == {"/home/dev": (1000, 1000), "/home/link": (77, 78), "/home/alice": (1001, 1001),
                      "/etc/group": (0, 4242), "/etc/passwd": (0, 0), "/tmp/fifo": (0, 0)}, owners
    # chown to the owner it already has records nothing and copies nothing up.
    lower_step = next(m for m in (layer_members(store, d) for d in manifest["layers"])
                      if "home/link" in m and m["home/link"].uid == 77)
    assert not any(n.startswith("bin/") for n in lower_step) and "etc/group" in lower_step and "home/link" in lower_step, sorted(lower_step)
    assert re.search(r"^alice:x:1001:1001:", layered_text(store, manifest, "etc/passwd"), re.M)


# A static probe of the get*id family (busybox `id` uses only getuid/geteuid/getgid/getegid and
# getgroups): the emulation answers getresuid/getresgid and getgroups by writing the ids into
# the caller's memory.
IDPROBE_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(void) {
    uid_t r, e, s; gid_t rg, eg, sg, groups[64];
    if (getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0) return 1;
    int n = getgroups(0, NULL), m = getgroups(64, groups);
    printf("%u %u %u %u res %u %u %u resg %u %u %u groups %d", getuid(), geteuid(), getgid(), getegid(),
           r, e, s, rg, eg, sg, n);
    for (int i = 0; i < m; ++i) printf(" %u", groups[i]);
    printf("\n");
    return n == m ? 0 : 2;
}
"""

USER_DOCKERFILE = """\
FROM {base}
COPY idprobe /usr/local/bin/idprobe
RUN echo 'dev:x:1000:1000::/home/dev:/bin/sh' >> /etc/passwd && echo 'dev:x:1000:' >> /etc/group \\
 && echo 'tools:x:2000:dev' >> /etc/group && mkdir -p /home/dev && chown dev:dev /home/dev
USER dev
RUN idprobe > /home/dev/ids && id -un > /home/dev/name && mkdir /home/dev/made && touch /home/dev/made/f \\
 && cat /home/dev/ids
"""


@pytest.mark.parametrize("mode", ["single", "subuid"])
def test_a_run_under_a_non_root_user_sees_that_user_and_its_files_are_its(aishell, reg, mode, tmp_path):
    """Single mode has no uid 1000: the RUN runs as container root, which the get*id family
    reports as dev, and what it made is dev's in the layer. Subuid mode really is dev: the same
    results, which is the point."""
    probe = tmp_path / "idprobe"
    run(["gcc", "-static", "-O2", "-x", "c", "-", "-o", str(probe)], input=IDPROBE_C)
    base = f"{reg.host}/busybox:latest"
    ctx = make_context(aishell, {"Dockerfile": USER_DOCKERFILE.format(base=base), "idprobe": probe.read_bytes()})
    os.chmod(os.path.join(ctx, "idprobe"), 0o755)
    r = build(aishell, ctx, "-t", "user:1", mode=mode)
    assert "1000 1000 1000 1000 res 1000 1000 1000 resg 1000 1000 1000 groups 1 2000" in r.stdout + r.stderr, \
        (r.stdout + r.stderr)[-3000:]
    store = aishell.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "user:1")
    assert config["config"]["User"] == "dev"
    assert layered_text(store, manifest, "home/dev/name") == "dev\n"
    last = layer_members(store, manifest["layers"][-1])
    owners = {n: (m.uid, m.gid) for n, m in last.items()}
    # Made by the step: dev's. Copied up from the layer below: the owner that layer recorded.
    assert owners == {"home": (0, 0), "home/dev": (1000, 1000), "home/dev/ids": (1000, 1000),
                      "home/dev/name": (1000, 1000), "home/dev/made": (1000, 1000),
                      "home/dev/made/f": (1000, 1000)}, owners
    # `aishell exec` runs as the image's USER too (single mode: the caller mapped to it; its
    # supplementary groups are the caller's, setgroups being denied there).
    r = aishell("exec", "--image", "user:1", "--", "sh", "-c", "idprobe; id -un",
                user="unpriv", env={"AISHELL_USERNS": mode})
    probe, name = r.stdout.splitlines()
    assert probe.startswith("1000 1000 1000 1000 res 1000 1000 1000 resg 1000 1000 1000 groups ") and name == "dev", \
        r.stdout
    if mode == "subuid":
        assert probe.endswith(" groups 1 2000"), probe


def test_exec_in_single_mode_has_no_emulation(aishell, reg):
    """Only build RUN steps emulate: `aishell exec` reports chown to an unmapped id as failed."""
    name = f"{reg.host}/busybox:latest"
    aishell("pull", name, user="unpriv", env={"AISHELL_USERNS": "single"})
    r = aishell("exec", "--image", name, "--", "sh", "-c", "touch /tmp/f; chown 1000 /tmp/f; echo rc=$?",
                user="unpriv", env={"AISHELL_USERNS": "single"})
    assert "rc=1" in r.stdout, (r.stdout, r.stderr)


# --- Debian: apt and useradd ---------------------------------------------------------------------
DEBIAN_DOCKERFILE = """\
FROM {foundation}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-config dump | grep -i 'sandbox::user' && echo "apt_config=$APT_CONFIG" \\
 && apt-get update && apt-get install -y --no-install-recommends tree \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN useradd -m -s /bin/bash -u 1000 dev && id dev && test -d /home/dev && test -f /home/dev/.bashrc
"""


@pytest.fixture(scope="module")
def debian_foundation(reg):
    layout = debian_layout()
    run(["skopeo", "copy", "--quiet", *reg.skopeo_dest_args(admin=True),
         f"oci:{layout}:bookworm", f"docker://{reg.host}/debian:bookworm"], timeout=300)
    return f"{reg.host}/debian:bookworm"


def test_debian_apt_get_install_and_useradd(aishell, debian_foundation):
    ctx = make_context(aishell, {"Dockerfile": DEBIAN_DOCKERFILE.format(foundation=debian_foundation)},
                       name="ctx-debian")
    r = build(aishell, ctx, "-t", "single:debian", mode="single", timeout=300)
    out = r.stdout + r.stderr
    assert re.search(r'^APT::Sandbox::User "root";$', out, re.M), out[-3000:]
    assert f"apt_config=/{APT_CONF}" in out, out[-3000:]
    assert re.search(r"Setting up tree ", out), out[-3000:]
    assert "uid=1000(dev) gid=1000(dev)" in out, out[-3000:]
    store = aishell.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "single:debian")
    assert len(manifest["layers"]) == 3, manifest["layers"]
    # The apt config never reaches a layer (the built ones touch nothing in /dev: debootstrap's
    # foundation layer has its own /dev nodes), nor the image's Env.
    assert APT_CONF not in all_layer_names(store, manifest)
    for desc in manifest["layers"][1:]:
        built = layer_members(store, desc)
        assert not any(n == "dev" or n.startswith("dev/") for n in built), sorted(built)
    assert not any(e.startswith("APT_CONFIG=") for e in config["config"].get("Env", []))
    final = final_entries(store, manifest)
    assert "/usr/bin/tree" in final and final["/usr/bin/tree"].mode & 0o111
    assert {"/home/dev", "/home/dev/.bashrc", "/home/dev/.profile"} <= set(final)
    passwd = layered_text(store, manifest, "etc/passwd")
    assert re.search(r"^dev:x:1000:1000::/home/dev:/bin/bash$", passwd, re.M), passwd
    # Owners as useradd and dpkg set them (recorded by the chown supervisor): the home and the
    # skeleton files belong to dev, the package's files to root.
    for path in ("/home/dev", "/home/dev/.bashrc", "/home/dev/.profile"):
        assert (final[path].uid, final[path].gid) == (1000, 1000), (path, final[path].uid, final[path].gid)
    assert (final["/usr/bin/tree"].uid, final["/usr/bin/tree"].gid) == (0, 0)

    # The image runs (as root: single mode has no uid 1000 to switch to).
    r = aishell("exec", "--image", "single:debian", "--", "sh", "-c", "id -u dev; tree --version",
                user="unpriv", env={"AISHELL_USERNS": "single"})
    lines = r.stdout.splitlines()
    assert lines[0] == "1000" and lines[1].startswith("tree v2."), r.stdout

    # An unchanged rebuild is all cached.
    again = build(aishell, ctx, "-t", "single:debian2", mode="single")
    assert all(line.startswith("CACHED") for line in step_lines(again.stderr)[1:]), again.stderr
