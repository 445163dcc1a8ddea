"""aishell build, `ADD <http(s) URL> <dest>` as BuildKit does it: files served by a small
Python http.server (and an https one whose test CA sits in ~/.aishell/certs.d/HOST:PORT/ca.crt)
on 127.0.0.1. Checked from the layer tars: content, the file name (the URL's last path
component, or dest without a trailing '/'), mode 0600, owner 0:0, mtime from Last-Modified (the
epoch without it), a .tar.gz that stays an archive, --chown/--chmod; --checksum good and bad;
404, a refused connection and an unknown CA (one error line naming the step and the URL, the
store as it was); the step cache (a download per build without --checksum, none on a hit with
it). Builds run as the unprivileged user; the core test in both userns modes."""
import email.utils
import gzip
import hashlib
import http.server
import io
import os
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time

import pytest

from helpers.build import (MODES, build, final_entries, image_id, layer_members, make_context,
                           manifest_and_config, step_lines)
from helpers.certs import make_ca_and_server_cert
from helpers.checks import assert_one_error, assert_store_unchanged, skopeo_inspect
from helpers.store import read_blob, snapshot, verify_store

LAST_MODIFIED = 1600000000  # 2020-09-13T12:26:40Z


class FileServer:
    """Serves {path: (body, headers, status)} on 127.0.0.1 (http, or https with a test CA);
    counts the GETs per path. `files` may be changed while it runs."""

    def __init__(self, workdir, tls=False):
        self.files = {}
        self.hits = {}
        self.release = threading.Event()  # ends the stalled responses of `stall` paths
        self.stall = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                body, headers, status = server.files.get(path, (b"no such file\n", {}, 404))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if path in server.stall:  # announce a large file, send a little, then stall
                    self.send_header("Content-Length", str(10 * len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    server.release.wait(120)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.ca_path = None
        if tls:
            os.makedirs(os.path.join(workdir, "tls"), exist_ok=True)
            self.ca_path = os.path.join(workdir, "tls", "ca.crt")
            cert, key = os.path.join(workdir, "tls", "server.crt"), os.path.join(workdir, "tls", "server.key")
            make_ca_and_server_cert(self.ca_path, cert, key)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"{self.scheme}://{self.host}{path}"

    def serve(self, path, body, last_modified=LAST_MODIFIED, status=200, headers=None):
        h = dict(headers or {})
        if last_modified is not None:
            h["Last-Modified"] = email.utils.formatdate(last_modified, usegmt=True)
        self.files[path] = (body, h, status)

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(aishell):
    started = []

    def factory(tls=False):
        s = FileServer(aishell.workdir, tls=tls)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def targz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def entries(store, name):
    manifest, _ = manifest_and_config(store, name)
    return final_entries(store, manifest)


def data_of(store, name, path):
    """The bytes of `path` in the image's layers (the last layer that has it)."""
    manifest, _ = manifest_and_config(store, name)
    for desc in reversed(manifest["layers"]):
        members = layer_members(store, desc)
        if path.lstrip("/") in members:
            raw = read_blob(store, desc["digest"])
            if desc["mediaType"].endswith("gzip"):
                raw = gzip.decompress(raw)
            with tarfile.open(fileobj=io.BytesIO(raw)) as t:
                return t.extractfile(path.lstrip("/")).read()
    raise AssertionError(f"{path} not in {name}")


TOOL = b"#!/bin/sh\necho tool\n"
ARCHIVE = targz({"inner/a.txt": b"inside\n"})


@pytest.mark.parametrize("mode", MODES)
def test_add_url_content_name_mode_mtime_and_no_extraction(aishell, server, mode):
    srv = server()
    srv.serve("/dl/tool.sh", TOOL)
    srv.serve("/dl/plain", b"no date\n", last_modified=None)
    srv.serve("/dl/files.tar.gz", ARCHIVE, headers={"Content-Type": "application/gzip"})
    srv.serve("/dl/owned.txt", b"owned\n")
    srv.serve("/dl/", b"index\n")
    srv.serve("/go/latest", b"", status=302, last_modified=None, headers={"Location": "/dl/tool.sh"})
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM scratch
ADD {srv.url('/dl/tool.sh')} /opt/bin/
ADD {srv.url('/dl/plain?version=2')} /renamed
ADD {srv.url('/dl/files.tar.gz')} /archives/
ADD --chown=1000:1001 --chmod=0751 {srv.url('/dl/owned.txt')} /owned/
ADD {srv.url('/dl/')} /idx/
WORKDIR /w
ADD {srv.url('/dl/tool.sh')} rel.sh
ADD {srv.url('/go/latest')} /redirected/
"""})
    r = build(aishell, ctx, "-t", "addurl:1", mode=mode)
    store = aishell.store
    e = entries(store, "addurl:1")

    tool = e["/opt/bin/tool.sh"]
    assert tool.isfile() and (tool.mode, tool.uid, tool.gid) == (0o600, 0, 0)
    assert tool.mtime == LAST_MODIFIED
    assert data_of(store, "addurl:1", "/opt/bin/tool.sh") == TOOL
    # dest without a trailing '/' is the file's name; the query is not part of the name.
    assert e["/renamed"].isfile() and e["/renamed"].mode == 0o600 and e["/renamed"].mtime == 0
    assert data_of(store, "addurl:1", "/renamed") == b"no date\n"
    # A remote archive is not extracted.
    assert "/archives/files.tar.gz" in e and "/archives/inner/a.txt" not in e
    assert data_of(store, "addurl:1", "/archives/files.tar.gz") == ARCHIVE
    owned = e["/owned/owned.txt"]
    assert (owned.mode, owned.uid, owned.gid) == (0o751, 1000, 1001)
    assert data_of(store, "addurl:1", "/idx/dl") == b"index\n"  # path.Base("/dl/") is "dl"
    assert data_of(store, "addurl:1", "/w/rel.sh") == TOOL  # relative dest: under WORKDIR
    # A redirect is followed; the name comes from the URL as written, not from where it led.
    assert data_of(store, "addurl:1", "/redirected/latest") == TOOL
    assert not verify_store(store)
    _, config = manifest_and_config(store, "addurl:1")
    assert any(h["created_by"].startswith(f"ADD {srv.url('/dl/tool.sh')} /opt/bin/") for h in config["history"])
    assert skopeo_inspect(store, "addurl:1")["Layers"]
    # The downloads do not stay in the store's tmp/.
    assert not [n for n in os.listdir(os.path.join(store, "tmp")) if n.startswith("add-")]
    assert r.stdout.strip() == image_id(r)


def test_add_url_over_https_with_the_ca_in_certs_d(aishell, server):
    srv = server(tls=True)
    srv.serve("/secure.txt", b"over tls\n")
    build(aishell, make_context(aishell, {"Dockerfile": "FROM scratch\nLABEL a=b\n"}, name="first"))
    before = snapshot(aishell.store)
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/secure.txt')} /s.txt\n"})

    # Without the CA: TLS verification fails, one error line naming the step and the URL.
    r = build(aishell, ctx, "-t", "tls:1", check=False)
    assert_one_error(r, r"\[2/2\] ADD .*download " + srv.url("/secure.txt").replace(".", r"\."))
    assert "certs.d/" + srv.host + "/ca.crt" in r.stderr, r.stderr  # the hint says where the CA goes
    assert_store_unchanged(aishell.store, before)

    with open(srv.ca_path, "rb") as f:
        aishell.write_home_file(f".aishell/certs.d/{srv.host}/ca.crt", f.read())
    build(aishell, ctx, "-t", "tls:1")
    assert data_of(aishell.store, "tls:1", "/s.txt") == b"over tls\n"
    assert entries(aishell.store, "tls:1")["/s.txt"].mode == 0o600


def test_add_url_checksum_good_and_bad(aishell, server):
    srv = server()
    srv.serve("/pinned.bin", TOOL)
    good = sha256(TOOL)
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD --checksum={good} {srv.url('/pinned.bin')} /p\n"})
    build(aishell, ctx, "-t", "sum:good")
    assert data_of(aishell.store, "sum:good", "/p") == TOOL

    before = snapshot(aishell.store)
    bad = sha256(b"something else")
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD --checksum={bad} {srv.url('/pinned.bin')} /p\n"},
                       name="ctx-bad")
    r = build(aishell, ctx, "-t", "sum:bad", check=False)
    line = assert_one_error(r, r"\[2/2\] ADD ")
    assert srv.url("/pinned.bin") in line and bad in line and good in line, line
    assert "checksum mismatch" in line
    assert_store_unchanged(aishell.store, before)

    # --checksum with a local source is refused by the parser, with its line.
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD --checksum={good} local.txt /l\n",
                                 "local.txt": "x"}, name="ctx-local")
    r = build(aishell, ctx, check=False)
    assert_one_error(r, r"Dockerfile:2: .*checksum can't be specified for non-HTTP\(S\) sources")


def test_add_url_errors_name_the_step_and_url_and_leave_the_store(aishell, server):
    srv = server()
    srv.serve("/ok.txt", b"ok\n")
    # A first build makes the store (and its id mapping) so the failures have a baseline.
    ok_ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/ok.txt')} /ok\n"}, name="ok")
    build(aishell, ok_ctx, "-t", "ok:1")
    before = snapshot(aishell.store)

    missing = srv.url("/missing.txt")
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/ok.txt')} /ok\nADD {missing} /m\n"})
    r = build(aishell, ctx, "-t", "err:404", check=False)
    line = assert_one_error(r, r"\[3/3\] ADD ")
    assert f"download {missing}: HTTP 404 Not Found" in line, line
    assert_store_unchanged(aishell.store, before)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = f"http://127.0.0.1:{port}/f.txt"
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {refused} /f\n"}, name="ctx2")
    r = build(aishell, ctx, "-t", "err:refused", check=False)
    line = assert_one_error(r, r"\[2/2\] ADD ")
    assert f"download {refused}: " in line and "connect" in line.lower(), line
    assert_store_unchanged(aishell.store, before)

    # Git sources are not fetched: said plainly, never treated as a context path.
    ctx = make_context(aishell, {"Dockerfile": "FROM scratch\nADD https://example.invalid/repo.git /src\n"},
                       name="ctx3")
    r = build(aishell, ctx, check=False)
    assert_one_error(r, r"\[2/2\] ADD .*Git repository .*not supported")
    assert_store_unchanged(aishell.store, before)


def test_add_url_cache_downloads_each_build_unless_checksum_pins_it(aishell, server):
    srv = server()
    srv.serve("/v.txt", b"version 1\n")
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/v.txt')} /v\nLABEL after=add\n"})
    first = build(aishell, ctx, "-t", "cache:1")
    assert srv.hits["/v.txt"] == 1
    # Same content: downloaded again (the key is the content's digest), then a cache hit.
    second = build(aishell, ctx, "-t", "cache:2")
    assert srv.hits["/v.txt"] == 2
    assert [l.split()[0] for l in step_lines(second.stderr) if " FROM " not in l] == ["CACHED", "CACHED"], \
        second.stderr
    assert image_id(second) == image_id(first)
    # Changed content: the ADD and what follows run again.
    srv.serve("/v.txt", b"version 2\n")
    third = build(aishell, ctx, "-t", "cache:3")
    assert srv.hits["/v.txt"] == 3
    assert not [l for l in step_lines(third.stderr) if l.startswith("CACHED")], third.stderr
    assert image_id(third) != image_id(first)
    assert data_of(aishell.store, "cache:3", "/v") == b"version 2\n"
    # A changed Last-Modified alone changes the file's mtime, so it misses too.
    srv.serve("/v.txt", b"version 2\n", last_modified=LAST_MODIFIED + 60)
    fourth = build(aishell, ctx, "-t", "cache:4")
    assert not [l for l in step_lines(fourth.stderr) if l.startswith("CACHED")], fourth.stderr
    assert entries(aishell.store, "cache:4")["/v"].mtime == LAST_MODIFIED + 60

    # With --checksum: the first build downloads, a rebuild hits the cache without a request.
    srv.serve("/pinned.txt", b"pinned\n")
    pinned = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD --checksum={sha256(b'pinned' + bytes([10]))} "
                                                  f"{srv.url('/pinned.txt')} /p\n"}, name="pinned")
    build(aishell, pinned, "-t", "pin:1")
    assert srv.hits["/pinned.txt"] == 1
    again = build(aishell, pinned, "-t", "pin:2")
    assert srv.hits["/pinned.txt"] == 1, "a cache hit with --checksum must not download"
    assert step_lines(again.stderr)[-1].startswith("CACHED [2/2] ADD"), again.stderr
    # --no-cache downloads (and verifies) again.
    build(aishell, pinned, "--no-cache", "-t", "pin:3")
    assert srv.hits["/pinned.txt"] == 2


def test_sigint_during_a_download_stops_the_build_and_cleans_up(aishell, server):
    srv = server()
    srv.serve("/ok.txt", b"ok\n")
    srv.serve("/slow.bin", b"x" * 4096)
    srv.stall.add("/slow.bin")
    build(aishell, make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/ok.txt')} /ok\n"},
                                name="first"), "-t", "ok:1")
    before = snapshot(aishell.store)
    ctx = make_context(aishell, {"Dockerfile": f"FROM scratch\nADD {srv.url('/slow.bin')} /slow\n"})
    proc = aishell.popen("build", "-t", "never:1", ctx, user="unpriv", env={"AISHELL_USERNS": "subuid"})
    try:
        deadline = time.monotonic() + 60
        while srv.hits.get("/slow.bin", 0) == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert srv.hits.get("/slow.bin") == 1, "the download did not start"
        time.sleep(0.3)  # the body's first bytes are in the file now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # the server would stall for 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, f"status {proc.returncode}\n{err}"
    line = assert_one_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                            r"\[2/2\] ADD .*interrupted by SIGINT")
    assert srv.url("/slow.bin") in line, line
    assert not [n for n in os.listdir(os.path.join(aishell.store, "tmp")) if not n.startswith(".")]
    assert_store_unchanged(aishell.store, before)
