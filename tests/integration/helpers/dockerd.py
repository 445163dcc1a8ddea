"""A private dockerd for tests that check what Docker makes of aishell's output (and the reverse).

Debian's docker.io, run as root with `--storage-driver vfs --iptables=false --bridge=none` and its
own data root, exec root and socket under a work dir, so it touches nothing of the host's Docker.
Containers need `--network none` (there is no bridge).
"""
import os
import signal
import subprocess
import sys
import time

DOCKER = "/usr/bin/docker"  # Debian's docker.io client (another docker may come first in PATH)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerdError(Exception):
    pass


class Dockerd:
    """A running private dockerd; docker(*args) runs the client against it; stop() ends it."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "dockerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--storage-driver", "vfs", "--iptables=false", "--bridge=none",
             "--data-root", os.path.join(self.dir, "root"),
             "--exec-root", os.path.join(self.dir, "exec"),
             "--pidfile", os.path.join(self.dir, "pid"), "-H", f"unix://{self.sock}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log_path, errors="replace") as f:
                    raise DockerdError("dockerd did not start:\n" + f.read()[-3000:])
            if os.path.exists(self.sock) and self.docker("info", check=False).returncode == 0:
                break
            time.sleep(0.2)

    def docker(self, *args, check=True, timeout=600, text=True, **kw):
        """The docker client against this daemon: a CompletedProcess with output captured."""
        env = {"PATH": BASE_PATH, "DOCKER_BUILDKIT": "0", "HOME": self.dir}
        cmd = [DOCKER, "-H", f"unix://{self.sock}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=text, timeout=timeout, env=env, **kw)
        if check and proc.returncode != 0:
            raise DockerdError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc

    def stop(self):
        """Stops the daemon and unmounts what it left mounted under its dir."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return unmount_below(self.dir)


def unmount_below(path):
    """Unmount what dockerd left mounted under path (its data root is a bind mount of itself),
    deepest first, so the work dir can go; False, leaving it in place, if something stays."""
    def mounted():
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].encode().decode("unicode_escape") for line in f]
        return sorted((p for p in points if p == path or p.startswith(path + "/")),
                      key=len, reverse=True)
    for point in mounted():
        subprocess.run(["umount", point], capture_output=True)
    left = mounted()
    if left:
        print(f"left {path} in place: still mounted: {', '.join(left)}", file=sys.stderr)
    return not left
