"""Symlinks in the build context cannot reach what .dockerignore leaves out.

BuildKit's builder never receives an ignored file, so in its copy of the context a symlink to
one dangles: COPY of the link (COPY follows its source's symlinks), of a path through a
symlinked directory, and a bind mount of the link all fail, and a symlinked directory brings
only what is not ignored. aishell's build reads the context in place, so it resolves each
source's symlinks itself and applies the ignore rules to every link and to the path it reaches
(the classic builder of Docker 20.10 gives the same results for the COPY cases)."""
import pytest

from helpers.build import build, layer_members, make_context, manifest_and_config, step_lines
from helpers.checks import assert_one_error

CONTEXT = {
    ".dockerignore": "secret.txt\ndir/s2.txt\n",
    "secret.txt": "secret\n", "ok.txt": "ok\n", "dir/s1.txt": "s1\n", "dir/s2.txt": "s2\n",
    "link_to_secret": ("link", "secret.txt"), "abslink": ("link", "/secret.txt"),
    "dirlink": ("link", "dir"), "link_to_ok": ("link", "ok.txt"),
    "chain": ("link", "link_to_secret"),
}


@pytest.fixture
def base(reg):
    return f"{reg.host}/busybox:latest"


@pytest.mark.parametrize("line", [
    "COPY link_to_secret /o",
    "COPY abslink /o",
    "COPY chain /o",
    "COPY dirlink/s2.txt /o",
    "RUN --mount=type=bind,source=link_to_secret,target=/m cat /m",
    "RUN --mount=type=bind,source=dirlink/s2.txt,target=/m cat /m",
])
def test_a_symlink_does_not_reach_an_ignored_file(aishell, base, line):
    ctx = make_context(aishell, {**CONTEXT, "Dockerfile": f"FROM {base}\n{line}\n"})
    r = build(aishell, ctx, "-t", "leak:1", check=False)
    assert_one_error(r, r"not (found )?in (the )?build context.*excluded by \.dockerignore")
    assert "secret" not in r.stdout and "s2" not in r.stdout


def test_a_symlinked_source_brings_only_what_is_not_ignored(aishell, base):
    dockerfile = (f"FROM {base}\nCOPY dirlink /o/\nCOPY link_to_ok /o/\n"
                  "RUN --mount=type=bind,source=dirlink,target=/m ls /m > /listed\n")
    ctx = make_context(aishell, {**CONTEXT, "Dockerfile": dockerfile})
    build(aishell, ctx, "-t", "ok:1")
    manifest, _ = manifest_and_config(aishell.store, "ok:1")
    copied = layer_members(aishell.store, manifest["layers"][-3])
    assert {"o/s1.txt"} <= set(copied) and "o/s2.txt" not in copied, sorted(copied)
    named = layer_members(aishell.store, manifest["layers"][-2])
    assert named["o/link_to_ok"].isfile() and named["o/link_to_ok"].size == 3  # the target's content
    run = layer_members(aishell.store, manifest["layers"][-1])
    assert run["listed"].size == len("s1.txt\n")
    # The ignored file is no part of the COPY's cache key: changing it leaves the step cached.
    with open(f"{ctx}/dir/s2.txt", "w") as f:
        f.write("changed\n")
    r = build(aishell, ctx, "-t", "ok:2")
    assert any(line.startswith("CACHED [2/4] COPY dirlink") for line in step_lines(r.stderr)), r.stderr
