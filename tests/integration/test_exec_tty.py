"""aishell exec -it under a pseudo-terminal (a Python pty harness standing in for the user's
terminal): the command's terminal is a pty of the container's own devpts, an interactive shell
with job control, Ctrl-C reaching the foreground job, the window size following the host
terminal, and the host terminal restored on exit."""
import os
import re
import signal
import termios
import time

import pytest

from helpers.terminal import Terminal, set_size


def wait_until_foreground(ancestor, cmdline, timeout=10.0):
    """Waits until a descendant of ancestor running cmdline (its /proc cmdline bytes) is the
    foreground process group of its terminal (stat's pgrp == tpgid), as the host sees it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    procs[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[5]), f.read())
            except (OSError, IndexError, ValueError):
                continue
        for pid, (_, pgrp, tpgid, argv) in procs.items():
            if argv != cmdline or pgrp != tpgid:
                continue
            parent = procs[pid][0]
            while parent in procs and parent != ancestor:
                parent = procs[parent][0]
            if parent == ancestor:
                return
        time.sleep(0.02)
    raise AssertionError(f"no {cmdline!r} below pid {ancestor} in the foreground after {timeout}s")


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_interactive_shell_job_control_ctrl_c_resize_and_restore(aishell, busybox, mode):
    term = Terminal(aishell, ["exec", "-it", "--image", busybox, "--", "sh"], mode)
    try:
        term.type("echo READY-$((6*7))\n")  # wait for output, not for the echo of the typing
        term.read_until("READY-42")
        term.type("tty; echo TTY-$((1+2))\n")
        assert re.search(r"\r\n/dev/pts/\d+\r\nTTY-3", term.read_until("TTY-3"))
        # aishell put the host terminal in raw mode for the session (the pty inside echoes).
        modes = termios.tcgetattr(term.slave)
        assert not modes[3] & (termios.ICANON | termios.ECHO)

        # Job control: a background job, listed, brought to the foreground, then Ctrl-C.
        term.type("sleep 60 &\n")
        term.type("jobs\n")
        term.read_until("Running")
        term.type("fg\n")
        term.read_until("sleep 60\r\n")
        wait_until_foreground(term.proc.pid, b"sleep\x0060\x00")
        term.type("\x03")  # Ctrl-C: SIGINT to the foreground job, not to the shell
        term.type("echo status=$?\n")
        term.read_until("status=130")
        term.type("jobs; echo JOBS-$((1+1))\n")
        text = term.read_until("JOBS-2")
        assert "Running" not in text.split("status=130", 1)[1]

        # Window size: the host terminal's size inside, and its changes (SIGWINCH).
        term.type("stty size\n")
        term.read_until("24 80")
        # A foreground command that prints the size when its terminal's size changes.
        term.type("sh -c 'trap \"stty size; exit 0\" WINCH; echo TRAP-$((2+3)); "
                  "while :; do sleep 0.05; done'\n")
        term.read_until("TRAP-5")
        set_size(term.slave, 41, 101)
        term.proc.send_signal(signal.SIGWINCH)
        term.read_until("41 101")

        term.type("exit 3\n")
        assert term.proc.wait(timeout=10) == 3
        # The host terminal is as it was before.
        assert termios.tcgetattr(term.slave) == term.initial_modes
    finally:
        term.close()


def test_tty_without_interactive_input(aishell, busybox):
    """-t alone: the command sees a terminal on stdout, stdin is /dev/null."""
    term = Terminal(aishell, ["exec", "-t", "--image", busybox, "--", "sh", "-c",
                              "test -t 1 && echo out-tty; test -t 0 || echo in-not-tty; echo TERM=$TERM"],
                    "subuid")
    try:
        text = term.read_until("TERM=")
        assert term.proc.wait(timeout=10) == 0
        text = term.read_until("\n")
        assert "out-tty" in text and "in-not-tty" in text and "TERM=xterm" in text
        assert termios.tcgetattr(term.slave) == term.initial_modes
    finally:
        term.close()


def fd_targets(listing):
    """{fd: link target} from busybox `ls -l /proc/PID/fd` output (an fd whose link cannot be
    read has no arrow and no entry)."""
    return {int(m[1]): m[2] for m in re.finditer(r" (\d+) -> (\S+)\r\n", listing)}


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_the_terminal_is_a_pts_of_the_containers_own_devpts(aishell, busybox, mode):
    """The command's terminal is /dev/pts/N of the container's devpts (not a host pty, which is
    no file inside): `tty` names it, the path is that character device inside, stdin is a
    terminal of the host terminal's size, the user the command runs as owns it (and may write to
    it), and no process inside holds the pty master."""
    term = Terminal(aishell, ["exec", "-it", "--user", "1000:1000", "--image", busybox, "--", "sh"], mode)
    try:
        term.type('t=$(tty); echo "TTY=[$t]"\n')
        tty = re.search(r"TTY=\[(/dev/pts/\d+)\]", term.read_until("]\r\n")).group(1)
        term.type('[ -c "$t" ] && echo CHAR-DEVICE; test -t 0 && echo STDIN-TTY\n')
        term.type('echo OWNER-$(stat -c %u "$t"); echo written > "$t" && echo WROTE-$((5*5))\n')
        term.type("stty size\n")
        term.type("echo SELF; ls -l /proc/self/fd; echo ALL; ls -l /proc/[0-9]*/fd 2>&1; echo DONE-$((6*7))\n")
        out = term.read_until("DONE-42")
        assert "\r\nCHAR-DEVICE\r\n" in out and "\r\nSTDIN-TTY\r\n" in out
        assert "\r\nOWNER-1000\r\n" in out and "WROTE-25" in out
        assert "\r\n24 80\r\n" in out
        self_fds = fd_targets(out.rsplit("\r\nSELF\r\n", 1)[1].split("\r\nALL\r\n", 1)[0])
        assert {self_fds[fd] for fd in (0, 1, 2)} == {tty}
        # Besides stdio, only busybox sh's own descriptor for job control (/dev/tty, fd 10).
        assert set(self_fds.values()) <= {tty, "/dev/tty"}, self_fds
        assert "ptmx" not in out.rsplit("\r\nALL\r\n", 1)[1]
        term.type("exit 0\n")
        assert term.proc.wait(timeout=10) == 0
    finally:
        term.close()
