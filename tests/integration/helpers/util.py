"""Small shared pieces: free ports, waiting for servers, running tools with readable failures."""
import hashlib
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    There is a window between closing our socket and the server binding it; tests run in
    parallel with other users of this machine, so callers retry when a server fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_on_loopback(backlog=64, address="127.0.0.1"):
    """A listening TCP socket on 127.0.0.1 (or address) and a free port: (socket, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(backlog)
    return sock, sock.getsockname()[1]


def run(cmd, check=True, timeout=300, **kwargs):
    """subprocess.run with text output captured; a failure shows the command and its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed with status {proc.returncode}: {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc


def wait_http(url, ca_path=None, timeout=15.0, proc=None, log_path=None):
    """Wait until url answers any HTTP status (401 counts: the server is up)."""
    ctx = ssl.create_default_context(cafile=ca_path) if ca_path else None
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx):
                return
        except urllib.error.HTTPError:
            return
        except (OSError, urllib.error.URLError) as e:  # not listening yet
            last = e
        time.sleep(0.05)
    log = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            log = f.read()[-4000:]
    raise RuntimeError(f"server at {url} did not come up ({last}); log:\n{log}")


def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def make_world_readable(path):
    """chmod a+rX over a tree: fixtures and CAs must be readable by the unprivileged user."""
    for root, dirs, files in os.walk(path):
        os.chmod(root, os.stat(root).st_mode | 0o755)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)


class RelayHandler(BaseHTTPRequestHandler):
    """An HTTP/1.1 handler for the test fronts that relay a registry: quiet, and _answer sends
    a response with a Content-Length of its own (relayed framing headers dropped)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, headers, body, head_only):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
