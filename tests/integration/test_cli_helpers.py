"""The hidden helper subcommands (`aishell __NAME ...`, what runtime and composer re-execute
aishell for inside a user namespace): dispatched from the modules' helper tables
(src/cli/helper_table.hpp), their argument errors reported as the one error line every
command uses. The helpers' real work is covered by the build and exec tests that start them."""
import pytest


HINT = " (hint: aishell starts it itself; it is not a command)"


@pytest.mark.parametrize("argv, line", [
    (["__rm"], "aishell: error: __rm: expected one directory" + HINT),
    (["__unpack", "x"], "aishell: error: __unpack: bad arguments" + HINT),
    (["__reown"], "aishell: error: __reown: bad arguments" + HINT),
    (["__userns-hold", "record"], "aishell: error: __userns-hold: expected RECORD FD" + HINT),
    (["__userns-hold", "record", "x"], 'aishell: error: __userns-hold: FD "x" is not a number' + HINT),
    (["__userns-hold", "record", "1"], "aishell: error: __userns-hold: FD 1 is not a pipe aishell passed" + HINT),
    (["__build-step-server", "x"], 'aishell: error: __build-step-server: FD "x" is not a number'),
    (["__build-step-server", "-1"], "aishell: error: __build-step-server: FD -1 is negative"),
    (["__prepare-run-mounts"], "aishell: error: __prepare-run-mounts: expected SPEC" + HINT),
])
def test_a_helper_given_bad_arguments_prints_one_exact_error_line(aishell, argv, line):
    proc = aishell(*argv, user="unpriv", check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr == line + "\n"
    assert proc.stdout == ""


def test_helpers_are_not_listed_in_help(aishell):
    out = aishell("--help", user="unpriv").stdout
    assert "__" not in out, out
