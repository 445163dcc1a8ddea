"""aishell build on Dockerfiles that Docker builds and aishell used to refuse or misread (issue 13,
items 3-8), each checked against what Docker 20.10's dockerd gives (BuildKit where the two
differ): a line ending in an escaped escape character, COPY below a dangling or escaping
symlink, ADD of a tar over existing paths, WORKDIR under an unknown USER, an unmatched glob
among several sources, and a new cache mount with a source= subdirectory.

Builds run as the unprivileged user on the `reg` fixture's busybox, in both userns modes where
owners matter; the images are read back from their layer tars, not through aishell."""
import io
import tarfile

import pytest

from helpers.build import MODES, build, final_entries, make_context, manifest_and_config
from helpers.checks import assert_one_error


@pytest.fixture
def base(reg):
    return f"{reg.host}/busybox:latest"


def env_of(config):
    return dict(e.split("=", 1) for e in config["config"].get("Env", []))


# --- 3. an escaped escape character at the end of a line -------------------------------------
@pytest.mark.parametrize("escape", ["\\", "`"])
def test_a_line_ending_in_an_escaped_escape_is_not_continued(aishell, base, escape):
    e = escape
    directive = "# escape=`\n" if e == "`" else ""
    dockerfile = (f"{directive}FROM {base}\n"
                  f"ENV C trailing{e}{e}backslash{e}{e}\n"
                  "ENV D x\n"
                  f"ENV E one {e}\n"
                  "  two\n")
    ctx = make_context(aishell, {"Dockerfile": dockerfile})
    build(aishell, ctx, "-t", "esc:1")
    _, config = manifest_and_config(aishell.store, "esc:1")
    env = env_of(config)
    # Docker 20.10: C=trailing\backslash\ (or with backticks), D=x, E="one   two".
    assert env["C"] == f"trailing{e}backslash{e}" and env["D"] == "x" and env["E"] == "one   two", env


# --- 4. COPY below a dangling or escaping symlink ---------------------------------------------
SYMLINK_DEST = """\
FROM {base}
RUN ln -s target /link && ln -s ../../.. /up && ln -s /etc /e && ln -s new /dang && ln -s newdir /dangd
COPY --chown=1000:1000 f /link/sub/
COPY f /up/x/
COPY f /e/
COPY f /dang
COPY d /dangd
RUN cat /target/sub/f /x/f /etc/f /new /newdir/g
"""


@pytest.mark.parametrize("mode", MODES)
def test_copy_follows_symlinks_in_the_destination_inside_the_rootfs(aishell, base, mode):
    ctx = make_context(aishell, {"Dockerfile": SYMLINK_DEST.format(base=base), "f": "hi\n", "d/g": "g\n"})
    build(aishell, ctx, "-t", "links:1", mode=mode)  # its last RUN reads every copy where Docker has it
    manifest, _ = manifest_and_config(aishell.store, "links:1")
    entries = final_entries(aishell.store, manifest)
    # Where Docker 20.10 puts them: through each link, never replacing it.
    for link, target in (("/link", "target"), ("/up", "../../.."), ("/e", "/etc"), ("/dang", "new"),
                         ("/dangd", "newdir")):
        assert entries[link].issym() and entries[link].linkname == target, link
    for path in ("/target/sub/f", "/x/f", "/etc/f", "/new", "/newdir/g"):
        assert entries[path].isfile(), path
    # --chown covers the directories the copy made, as Docker's MkdirAll.
    for path in ("/target", "/target/sub", "/target/sub/f"):
        assert (entries[path].uid, entries[path].gid) == (1000, 1000), path
    assert not any(p.startswith("/link/") for p in entries)


# --- 5. ADD of a tar over existing paths ------------------------------------------------------
def tar_of(members, links=None):
    """A tar of (name, type, data) members; directories 0700, files 0640, owned 0:0; links:
    {name: target} of its symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = (links or {}).get(name, "")
            info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o640
            info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


ADD_OVER = """\
FROM {base}
RUN mkdir -p /d/sub /t1 /t2 /t3 && touch /d/f /d/sub/g && chmod 0711 /t1 /t2 /t3 && ln -s /etc /t3/l \\
 && echo e > /t3/e
ADD empty_dir.tar /t1/
ADD empty_file.tar /t2/
ADD dot.tar /t3/
ADD d.tar /
ADD l.tar /t3/
"""


@pytest.mark.parametrize("mode", MODES)
def test_add_tar_skips_the_root_entry_and_replaces_what_stands_in_the_way(aishell, base, mode):
    ctx = make_context(aishell, {
        "Dockerfile": ADD_OVER.format(base=base),
        # Python writes an empty directory name as "/" and an empty file name as "".
        "empty_dir.tar": tar_of([("", tarfile.DIRTYPE, b""), ("a/f", tarfile.REGTYPE, b"af\n")]),
        "empty_file.tar": tar_of([("", tarfile.REGTYPE, b""), ("b", tarfile.REGTYPE, b"b\n")]),
        "dot.tar": tar_of([("./", tarfile.DIRTYPE, b""), ("./c", tarfile.REGTYPE, b"c\n")]),
        "d.tar": tar_of([("d", tarfile.REGTYPE, b"now a file\n")]),
        "l.tar": tar_of([("l", tarfile.REGTYPE, b"file over link\n"), ("e", tarfile.DIRTYPE, b""),
                         ("e/x", tarfile.REGTYPE, b"x\n")]),
    })
    build(aishell, ctx, "-t", "addover:1", mode=mode)
    manifest, _ = manifest_and_config(aishell.store, "addover:1")
    entries = final_entries(aishell.store, manifest)
    # What Docker 20.10 gives, except that BuildKit (go-archive) also skips the "/" entry that
    # the classic builder applied to /t1: every target dir keeps its 0711.
    for d in ("/t1", "/t2", "/t3"):
        assert entries[d].isdir() and entries[d].mode & 0o7777 == 0o711, (d, oct(entries[d].mode))
    assert entries["/t1/a/f"].isfile() and entries["/t2/b"].isfile() and entries["/t3/c"].isfile()
    # A file over a directory with content, a file over a symlink, a directory over a file.
    assert entries["/d"].isfile() and entries["/d"].size == len(b"now a file\n")
    assert entries["/t3/l"].isfile() and entries["/t3/e"].isdir() and entries["/t3/e/x"].isfile()


# --- 6. WORKDIR under a USER the image does not know ------------------------------------------
def test_workdir_after_an_unknown_user_is_made_as_root_and_a_run_still_fails(aishell, base):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nUSER nosuchuser\nWORKDIR /w/x\n"})
    build(aishell, ctx, "-t", "wd:1")
    manifest, config = manifest_and_config(aishell.store, "wd:1")
    assert config["config"]["WorkingDir"] == "/w/x" and config["config"]["User"] == "nosuchuser"
    entries = final_entries(aishell.store, manifest)
    for d in ("/w", "/w/x"):
        assert entries[d].isdir() and (entries[d].uid, entries[d].gid) == (0, 0), d
    # Docker: "unable to find user nosuchuser: no matching entries in passwd file".
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nUSER nosuchuser\nWORKDIR /w\nRUN true\n"}, "ctx2")
    r = build(aishell, ctx, "-t", "wd:2", check=False)
    assert_one_error(r, "user 'nosuchuser' not found")


# --- 7. a wildcard that matches nothing -------------------------------------------------------
def test_an_unmatched_wildcard_among_sources_is_skipped(aishell, base):
    ctx = make_context(aishell, {
        "Dockerfile": f"FROM {base}\nCOPY f missing* /d/\nCOPY f missing* /e\nCOPY missing* /g/\n"
                      "COPY nothing/../missing?.txt /h/\n",
        "f": "f\n"})
    build(aishell, ctx, "-t", "glob:1")
    manifest, _ = manifest_and_config(aishell.store, "glob:1")
    entries = final_entries(aishell.store, manifest)
    assert entries["/d/f"].isfile() and entries["/e"].isfile()
    # BuildKit: a COPY whose only source is an unmatched wildcard copies nothing and makes no
    # destination (Docker's classic builder fails: "no source files were specified").
    assert "/g" not in entries and "/h" not in entries
    # A plain name must still exist.
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nCOPY f missing /d/\n", "f": "f\n"}, "ctx2")
    assert_one_error(build(aishell, ctx, "-t", "glob:2", check=False), "file not found.*: missing")


# --- 8. a new cache mount with source= --------------------------------------------------------
CACHE_SOURCE = """\
FROM {base}
RUN --mount=type=cache,id=c8,source=sub/dir,target=/x echo one > /x/f && ls -a /x > /first
RUN --mount=type=cache,id=c8,target=/all cat /all/sub/dir/f > /second
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_new_cache_mount_with_a_source_subdir_is_created(aishell, base, mode):
    ctx = make_context(aishell, {"Dockerfile": CACHE_SOURCE.format(base=base)})
    build(aishell, ctx, "-t", "cachesrc:1", mode=mode)
    manifest, _ = manifest_and_config(aishell.store, "cachesrc:1")
    entries = final_entries(aishell.store, manifest)
    assert "/x" not in entries and "/all" not in entries
    assert entries["/second"].size == len(b"one\n")


def test_add_tar_never_removes_a_directory_through_a_symlink(aishell, base):
    # Replacing a directory in a member's way must stay beneath the destination: a member that
    # reaches its path through a symlink (the tar's own l -> /, or the image's /t/k -> /keep)
    # must not remove /bin or /keep/d of the image (5008cb3 removed both, and the build passed).
    ctx = make_context(aishell, {
        "Dockerfile": f"FROM {base}\nRUN mkdir -p /keep/d /t /y/d && touch /keep/d/f /y/d/f && ln -s /keep /t/k\n"
                      "ADD l.tar /x/\nADD k.tar /t/\nADD d.tar /y/\nRUN test -x /bin/sh && test -f /keep/d/f\n",
        "l.tar": tar_of([("l", tarfile.SYMTYPE, b""), ("l/bin", tarfile.REGTYPE, b"file\n")], links={"l": "/"}),
        "k.tar": tar_of([("k/d", tarfile.REGTYPE, b"file\n")]),
        "d.tar": tar_of([("d", tarfile.REGTYPE, b"now a file\n")]),
    })
    build(aishell, ctx, "-t", "addlinks:1")
    manifest, _ = manifest_and_config(aishell.store, "addlinks:1")
    entries = final_entries(aishell.store, manifest)
    assert entries["/bin/sh"] and entries["/keep/d"].isdir() and entries["/keep/d/f"].isfile()
    # Beneath a destination other than /, a directory with content in a member's way still goes.
    assert entries["/y/d"].isfile() and entries["/y/d"].size == len(b"now a file\n")
