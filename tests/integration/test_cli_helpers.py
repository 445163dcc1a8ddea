"""The hidden helper subcommands (`aishell __NAME ...`, what runtime and composer re-execute
aishell for inside a user namespace): dispatched from the modules' helper tables
(src/cli/helper_table.hpp), their argument errors reported as the one error line every
command uses. The helpers' real work is covered by the build and exec tests that start them."""
import pytest


@pytest.mark.parametrize("argv, line", [
    (["__rm"], "aishell: error: __rm: expected one directory (hint: it is started by aishell exec and build)"),
    (["__unpack", "x"], "aishell: error: __unpack: bad arguments (hint: it is started by aishell exec and build)"),
    (["__build-step-server", "x"], 'aishell: error: __build-step-server: FD "x" is not a number'),
    (["__build-step-server", "-1"], "aishell: error: __build-step-server: FD -1 is negative"),
    (["__prepare-run-mounts"], "aishell: error: __prepare-run-mounts: expected SPEC (hint: it is started by aishell build)"),
])
def test_a_helper_given_bad_arguments_prints_one_exact_error_line(aishell, argv, line):
    proc = aishell(*argv, user="unpriv", check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr == line + "\n"
    assert proc.stdout == ""


def test_helpers_are_not_listed_in_help(aishell):
    out = aishell("--help", user="unpriv").stdout
    assert "__" not in out, out
