"""A pseudo-terminal harness for tests: aishell on the slave side of a new pty (its controlling
terminal), driven through the master as a user at a keyboard would."""
import fcntl
import os
import select
import struct
import subprocess
import termios
import time


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """aishell running on the slave side of a new pty (its controlling terminal), driven
    through the master as a user at a keyboard would."""

    def __init__(self, aishell, args, mode, cwd=None):
        self.master, self.slave = os.openpty()
        set_size(self.slave, 24, 80)
        self.initial_modes = termios.tcgetattr(self.slave)
        self.output = b""

        def become_terminal_owner():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = aishell.env_for("unpriv", {"AISHELL_USERNS": mode, "TERM": "xterm"})
        self.proc = subprocess.Popen(aishell.command(args, "unpriv"), stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, env=env, cwd=cwd or aishell.home,
                                     preexec_fn=become_terminal_owner)

    def read_until(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on the terminal; got:\n"
                                     f"{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.output.decode(errors="replace")

    def type(self, text):
        os.write(self.master, text.encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
