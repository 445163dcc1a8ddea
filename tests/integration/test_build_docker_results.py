"""aishell build gives what Docker gives (BuildKit where it and the classic builder differ; the
differences are listed in tests/conformance/intentional-differences.md). Each case was built
by dockerd 20.10 (classic) and read against BuildKit's source; the comments say which.

- A stage whose base has no PATH (FROM scratch) gets the default PATH in its config, and ENV
  sees it (BuildKit's dockerfile2llb).
- WORKDIR keeps an absolute path as written (`/a/b/`); a relative one is joined and cleaned.
- RUN has HOME when the image does not set it: the USER's home in /etc/passwd, "/" without an
  entry (runc's setupUser).
- COPY of a directory makes a missing destination 0755 (root's, or --chown's); its
  subdirectories keep their modes, also those an .dockerignore exception implies (BuildKit).
- Set-id bits of context files are kept (BuildKit; the classic builder dropped them).
- ADD of a tar resolves the symlinks it holds with the destination as the root; a source
  directory meeting a symlink below the destination is refused (BuildKit's fsutil).
- .dockerignore exceptions: an excluded directory is in the context only as the parent of an
  entry an exception keeps (BuildKit's context transfer).

Builds run as the unprivileged user on rt-busybox (the `reg` fixture); where owners or modes
matter, in both userns modes."""
import io
import json
import os
import tarfile

import pytest

from helpers.build import build, final_entries, make_context, manifest_and_config
from helpers.checks import assert_one_error

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def config_of(runner, name):
    return manifest_and_config(runner.store, name)[1]["config"]


# --- issue 13 item 9: the default PATH ------------------------------------------------------------
def test_scratch_stage_gets_the_default_path_in_its_config(aishell):
    ctx = make_context(aishell, {
        "Dockerfile": "FROM scratch\nENV X=$PATH:/extra\nCOPY f /f\n",
        "f": "f\n",
    })
    build(aishell, ctx, "-t", "scratch:1")
    assert config_of(aishell, "scratch:1")["Env"] == [DEFAULT_PATH, "X=" + DEFAULT_PATH[5:] + ":/extra"]


def test_a_stage_from_a_scratch_stage_keeps_one_path(aishell):
    ctx = make_context(aishell, {
        "Dockerfile": "FROM scratch AS a\nENV A=1\nFROM a AS own\nENV PATH=/only\nFROM a\nCOPY f /f\n",
        "f": "f\n",
    })
    build(aishell, ctx, "-t", "child:1")
    assert config_of(aishell, "child:1")["Env"] == [DEFAULT_PATH, "A=1"]
    build(aishell, ctx, "--target", "own", "-t", "own:1")
    assert config_of(aishell, "own:1")["Env"] == ["PATH=/only", "A=1"]


# --- issue 13 item 14: WORKDIR as written, HOME in RUN --------------------------------------------
def test_workdir_keeps_an_absolute_path_as_written(aishell, reg):
    ctx = make_context(aishell, {"Dockerfile": (
        f"FROM {reg.host}/busybox:latest AS s0\nWORKDIR /a/b/\nRUN pwd > /pwd\n"
        "FROM s0 AS s1\nWORKDIR /a/./c/../d\nWORKDIR e/\n"
        "FROM s0 AS s2\nWORKDIR /x\nWORKDIR ./y/../z/\n")})
    # dockerd 20.10: "/a/b/", "/a/d/e", "/x/z" (BuildKit's NormalizeWorkdir the same)
    for target, want in (("s0", "/a/b/"), ("s1", "/a/d/e"), ("s2", "/x/z")):
        build(aishell, ctx, "--target", target, "-t", f"wd:{target}")
        assert config_of(aishell, f"wd:{target}")["WorkingDir"] == want, target


HOME_DOCKERFILE = """\
FROM {base}
RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd
RUN echo "home-root=$HOME."
USER app
RUN echo "home-app=$HOME."
USER 1234
RUN echo "home-1234=$HOME."
ENV HOME=/set
RUN echo "home-env=$HOME."
FROM scratch
COPY --from=0 /bin/busybox /busybox
RUN ["/busybox", "sh", "-c", "echo home-nopasswd=$HOME."]
"""


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_run_has_home_from_passwd_when_the_image_sets_none(aishell, reg, mode):
    ctx = make_context(aishell, {"Dockerfile": HOME_DOCKERFILE.format(base=f"{reg.host}/busybox:latest")})
    r = build(aishell, ctx, "-t", "home:1", mode=mode)
    out = r.stdout + r.stderr
    # dockerd 20.10 (runc): /root, the passwd entry's home, "/" for a uid without one
    for want in ("home-root=/root.", "home-app=/home/app.", "home-1234=/.", "home-env=/set.",
                 "home-nopasswd=/."):
        assert want in out, out
    assert not any(e.startswith("HOME=") for e in config_of(aishell, "home:1")["Env"])


def entries(runner, name):
    manifest, _ = manifest_and_config(runner.store, name)
    return final_entries(runner.store, manifest)


# --- issue 13 items 10 and 11: modes of copied directories and set-id bits ------------------------
@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_copied_directory_modes_as_buildkit_makes_them(aishell, reg, mode):
    ctx = make_context(aishell, {
        "Dockerfile": (f"FROM {reg.host}/busybox:latest\n"
                       "COPY d /d\nCOPY --chown=7:8 d /o/d\nCOPY x /x/\nCOPY . /c/\n"),
        "d/sub/f": "f\n", "x/keep/f": "k\n", "x/drop": "d\n",
        ".dockerignore": "x\n!x/keep/f\n",
    })
    os.chmod(os.path.join(ctx, "d"), 0o775)
    os.chmod(os.path.join(ctx, "d/sub"), 0o700)
    os.chmod(os.path.join(ctx, "x"), 0o750)
    os.chmod(os.path.join(ctx, "x/keep"), 0o711)
    build(aishell, ctx, "-t", "modes:1", mode=mode)
    e = entries(aishell, "modes:1")
    got = {p: (e[p].mode & 0o7777, e[p].uid, e[p].gid) for p in
           ("/d", "/d/sub", "/o", "/o/d", "/o/d/sub", "/x", "/x/keep", "/c/d", "/c/x", "/c/x/keep")}
    # The destination (and its implied parents) 0755, root's or --chown's; subdirectories as
    # in the context, also x and x/keep that the exception implies (BuildKit sends them with
    # their metadata; Docker's classic builder made them 0755).
    assert got == {"/d": (0o755, 0, 0), "/d/sub": (0o700, 0, 0),
                   "/o": (0o755, 7, 8), "/o/d": (0o755, 7, 8), "/o/d/sub": (0o700, 7, 8),
                   "/x": (0o755, 0, 0), "/x/keep": (0o711, 0, 0),
                   "/c/d": (0o775, 0, 0), "/c/x": (0o750, 0, 0), "/c/x/keep": (0o711, 0, 0)}
    assert "/x/drop" not in e and "/c/x/drop" not in e


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_setuid_and_setgid_bits_of_context_files_are_kept(aishell, reg, mode):
    # BuildKit (fsutil copyFileInfo chmods with the source's mode, set-id bits included); the
    # classic builder gave 0755: an intentional difference.
    ctx = make_context(aishell, {
        "Dockerfile": f"FROM {reg.host}/busybox:latest\nCOPY s g /\nCOPY --chown=1000:1000 s /o/\n",
        "s": "#!/bin/sh\n", "g": "#!/bin/sh\n"})
    os.chmod(os.path.join(ctx, "s"), 0o4755)
    os.chmod(os.path.join(ctx, "g"), 0o2755)
    build(aishell, ctx, "-t", "setid:1", mode=mode)
    e = entries(aishell, "setid:1")
    assert (e["/s"].mode & 0o7777, e["/g"].mode & 0o7777) == (0o4755, 0o2755)
    assert (e["/o/s"].mode & 0o7777, e["/o/s"].uid, e["/o/s"].gid) == (0o4755, 1000, 1000)


# --- issue 13 item 12: symlinks in an ADDed tar, a directory onto a symlink -----------------------
def link_tar(link, target, member):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo(link)
        info.type, info.linkname = tarfile.SYMTYPE, target
        t.addfile(info)
        data = b"in the tar\n"
        info = tarfile.TarInfo(member)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_add_tar_resolves_its_symlinks_beneath_the_destination(aishell, reg, mode):
    # dockerd 20.10 (chrootarchive.Untar, BuildKit's unpack the same): the link stays, the member
    # goes to DEST/etc/...; nothing is written above the destination, whatever the link says.
    ctx = make_context(aishell, {
        "Dockerfile": (f"FROM {reg.host}/busybox:latest\nRUN mkdir /sub\nADD up.tar /sub\n"
                       "ADD root.tar /sub2\nADD deep.tar /sub3/x\n"),
        "up.tar": link_tar("l", "..", "l/etc/f"),
        "root.tar": link_tar("l", "/", "l/etc/g"),
        "deep.tar": link_tar("l", "../../..", "l/etc/h"),
    })
    build(aishell, ctx, "-t", "tarlinks:1", mode=mode)
    e = entries(aishell, "tarlinks:1")
    for dest, target, name in (("/sub", "..", "f"), ("/sub2", "/", "g"), ("/sub3/x", "../../..", "h")):
        assert e[f"{dest}/l"].issym() and e[f"{dest}/l"].linkname == target, dest
        assert e[f"{dest}/etc/{name}"].isfile(), dest
    assert not any(p in e for p in ("/etc/f", "/etc/g", "/etc/h", "/sub3/etc/h"))


def test_copying_a_directory_onto_a_symlink_below_the_destination_is_refused(aishell, reg):
    # BuildKit: "cannot copy to non-directory" (fsutil copyDirectoryOnly, moby/moby#47367);
    # Docker's classic builder replaced /x with a directory (moby/moby#41035, called a bug).
    ctx = make_context(aishell, {
        "Dockerfile": f"FROM {reg.host}/busybox:latest\nRUN mkdir /dir && ln -s dir /x\nCOPY t/ /\n",
        "t/x/f": "f\n"})
    r = build(aishell, ctx, "-t", "ontolink:1", check=False)
    assert r.returncode != 0
    assert_one_error(r, "COPY: cannot copy to non-directory: /x$")


# --- issue 13 item 13: .dockerignore exceptions ---------------------------------------------------
def test_dockerignore_exception_keeps_only_what_it_names(aishell, reg):
    files = {"Dockerfile": f"FROM {reg.host}/busybox:latest\nCOPY d /d\nCOPY . /c/\n",
             "d/keep": "k\n", "d/drop": "x\n", "e/drop": "x\n"}
    # "**" and "!d/keep": d is in the context as keep's parent (dockerd 20.10 copies /d/keep)
    ctx = make_context(aishell, {**files, ".dockerignore": "**\n!d/keep\n!Dockerfile\n"})
    build(aishell, ctx, "-t", "ign:1")
    e = entries(aishell, "ign:1")
    assert e["/d/keep"].isfile() and e["/c/d/keep"].isfile()
    assert not any(p in e for p in ("/d/drop", "/c/d/drop", "/c/e"))
    # "**" and "!d/sub/keep" with no d/sub: nothing of d is in the context (dockerd 20.10: no /c/d)
    ctx = make_context(aishell, {**files, "Dockerfile": f"FROM {reg.host}/busybox:latest\nCOPY . /c/\n",
                                 ".dockerignore": "**\n!d/sub/keep\n!Dockerfile\n"})
    build(aishell, ctx, "-t", "ign:2")
    e = entries(aishell, "ign:2")
    assert "/c/Dockerfile" in e and "/c/d" not in e and "/c/e" not in e
