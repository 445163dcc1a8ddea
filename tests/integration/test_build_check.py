"""`aishell build --check`: the real binary parses and validates Dockerfiles without building.

The corpus in tests/fixtures/dockerfiles is rendered by the binary and must equal the parse trees
the unit tests pin (NAME.expected.json, plus the chosen "target"); a bad Dockerfile gives exactly
one `aishell: error:` line naming FILE:LINE and a non-zero exit status. Runs as the unprivileged
user: checking a Dockerfile needs no privileges and no store.
"""
import json
import os

import pytest

CORPUS = ["continuations", "escape_backtick", "heredocs", "instructions", "json_forms", "modifiers",
          "multistage", "substitutions"]


def corpus_path(fixtures_dir, name, suffix):
    return os.path.join(fixtures_dir, "dockerfiles", name + suffix)


def option_args(fixtures_dir, name):
    """The same build args and platform the unit test uses for this corpus file."""
    path = corpus_path(fixtures_dir, name, ".options.json")
    options = {}
    if os.path.exists(path):
        with open(path) as f:
            options = json.load(f)
    args = ["--platform", options.get("platform", "linux/amd64")]
    for key, value in sorted(options.get("build_args", {}).items()):
        args += ["--build-arg", f"{key}={value}"]
    return args


def single_error(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("aishell: error: ")]
    assert len(errors) == 1 and len(lines) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_json_matches_expected_tree(aishell, fixtures_dir, name):
    context = os.path.join(fixtures_dir, "dockerfiles")
    # The binary is run from the context so the file name it reports is the corpus name.
    proc = aishell("build", "--check", "--json", *option_args(fixtures_dir, name), "-f",
                   corpus_path(fixtures_dir, name, ".Dockerfile"), context, user="unpriv")
    got = json.loads(proc.stdout)
    with open(corpus_path(fixtures_dir, name, ".expected.json")) as f:
        expected = json.load(f)
    assert got.pop("target") == len(expected["stages"]) - 1
    # The unit test names the file NAME.Dockerfile; the binary names it by the path it was given.
    path = corpus_path(fixtures_dir, name, ".Dockerfile")
    expected_text = json.dumps(expected).replace(f"{name}.Dockerfile", path)
    assert got == json.loads(expected_text)


def test_text_output_lists_stages_and_instructions(aishell, fixtures_dir):
    path = corpus_path(fixtures_dir, "multistage", ".Dockerfile")
    proc = aishell("build", "--check", "--target", "BUILD", "-f", path,
                   os.path.join(fixtures_dir, "dockerfiles"), user="unpriv")
    out = proc.stdout
    assert f"{path}: 3 stages" in out
    assert 'stage 0 "base": FROM alpine:3.19  [line 2]' in out
    assert 'stage 1 "build": FROM base  [line 7]' in out
    assert "  12\tCOPY --from=base /etc/alpine-release ." in out
    assert 'target: stage 1 "build"' in out
    assert proc.stderr == ""


def write_context(aishell, name, files):
    for rel, data in files.items():
        aishell.write_home_file(os.path.join(name, rel), data)
    return os.path.join(aishell.home, name)


def test_default_dockerfile_and_build_args(aishell):
    ctx = write_context(aishell, "ctx", {
        "Dockerfile": "ARG BASE=alpine\nFROM ${BASE}:3.19\nARG GREETING=hi\nENV G=$GREETING\n",
        ".dockerignore": "# comment\n*.log\n!keep.log\n",
    })
    proc = aishell("build", "--check", "--json", "--build-arg", "BASE=debian", "--build-arg",
                   "GREETING=hello", ctx, user="unpriv")
    tree = json.loads(proc.stdout)
    assert tree["stages"][0]["from"] == "debian:3.19"
    assert tree["stages"][0]["instructions"][1]["expanded"] == ["G=hello"]
    assert tree["warnings"] == []


def test_bad_dockerfile_names_file_and_line(aishell):
    ctx = write_context(aishell, "bad", {
        "Dockerfile": "FROM alpine\nRUN echo ok \\\n    && echo more\nCOPY --chmown=1000 a /b\n",
    })
    proc = aishell("build", "--check", "--json", ctx, user="unpriv", check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert single_error(proc) == (f"aishell: error: {ctx}/Dockerfile:4: COPY: unknown flag: --chmown "
                                  f"(hint: did you mean --chown?)")


@pytest.mark.parametrize("dockerfile,args,expected", [
    ("FROM a AS build\nFROM b\n", ["--target", "biuld"],
     'Dockerfile: target stage "biuld" could not be found (hint: did you mean build?)'),
    ("FROM a\nRUN <<EOF\necho never ends\n", [], "Dockerfile:2: unterminated heredoc <<EOF"),
    ("FROM a\nRUN [\"sh\", 1]\n", [], "Dockerfile:2: RUN: when using JSON array syntax"),
    ("FROM scratch\nENV A=\"${B:?must be set}\"\n", [], "Dockerfile:2: ENV: B: must be set"),
    ("# escape=x\nFROM a\n", [], "Dockerfile:1: invalid escape token 'x'"),
])
def test_errors(aishell, dockerfile, args, expected):
    ctx = write_context(aishell, "errs", {"Dockerfile": dockerfile})
    proc = aishell("build", "--check", *args, ctx, user="unpriv", check=False)
    assert proc.returncode == 1
    assert single_error(proc).startswith(f"aishell: error: {ctx}/{expected}")


def test_bad_dockerignore_is_reported(aishell):
    ctx = write_context(aishell, "ign", {"Dockerfile": "FROM a\n", ".dockerignore": "ok\nsrc/[abc\n"})
    proc = aishell("build", "--check", ctx, user="unpriv", check=False)
    assert proc.returncode == 1
    assert single_error(proc).startswith(f"aishell: error: {ctx}/.dockerignore:2: syntax error in pattern: src/[abc")


def test_missing_context_and_file(aishell):
    proc = aishell("build", "--check", "/nonexistent-context", user="unpriv", check=False)
    assert proc.returncode == 1
    assert "build context /nonexistent-context is not a directory" in single_error(proc)
    ctx = write_context(aishell, "empty", {"README": "no Dockerfile here\n"})
    proc = aishell("build", "--check", ctx, user="unpriv", check=False)
    assert proc.returncode == 1
    assert f"{ctx}/Dockerfile" in single_error(proc)
