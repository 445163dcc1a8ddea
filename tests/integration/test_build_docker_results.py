"""aishell build gives what Docker gives (BuildKit where it and the classic builder differ; the
differences are listed in tests/conformance/intentional-differences.md). Each case was built
by dockerd 20.10 (classic) and read against BuildKit's source; the comments say which.

- A stage whose base has no PATH (FROM scratch) gets the default PATH in its config, and ENV
  sees it (BuildKit's dockerfile2llb).
- WORKDIR keeps an absolute path as written (`/a/b/`); a relative one is joined and cleaned.
- RUN has HOME when the image does not set it: the USER's home in /etc/passwd, "/" without an
  entry (runc's setupUser).

Builds run as the unprivileged user on rt-busybox (the `reg` fixture); where owners or modes
matter, in both userns modes."""
import pytest

from helpers.build import build, make_context, manifest_and_config

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
