"""A TLS front for a registry whose blob uploads go to another authority, as registries with
a storage backend send them (an upload URL on the storage host, or a 307 to it).

Two listeners on 127.0.0.1 (or address, e.g. a non-loopback one of this host):
  front    (TLS, its own CA at .ca_path; .host) relays every request to the registry,
           Authorization included, and answers with the registry's response. mode "location":
           the Location of an upload session (POST /v2/NAME/blobs/uploads/ and what follows)
           names the storage. mode "redirect": the Location names the front, and every PATCH
           or PUT of an upload session is answered 307 to the same path on the storage.
  storage  (plain HTTP, .storage_host: another port, so another authority) logs each request
           with its headers, then relays it to the registry with the registry's own credentials
           (what a presigned URL stands for) and answers with its response.

`.front_requests` and `.storage_requests` are the logs: (method, path, lower-case headers).
hold_patches=True: the storage takes a PATCH's body, logs it, and answers only once `.release`
is set (or the front stops): a push caught mid-upload, for SIGINT tests.
"""
import base64
import http.client
import os
import re
import socket
import ssl
import tempfile
import threading

from .certs import make_ca_and_server_cert
from .util import RelayHandler, listen_on_loopback

UPLOAD_PATH = re.compile(r"^/v2/.+/blobs/uploads/[^?]+")


class UploadFront:
    def __init__(self, registry, mode, workdir=None, hold_patches=False, address="127.0.0.1"):
        assert mode in ("location", "redirect")
        self.registry = registry
        self.mode = mode
        self.hold_patches = hold_patches
        self.release = threading.Event()
        self.front_requests = []
        self.storage_requests = []
        self._dir = tempfile.mkdtemp(prefix="upload-front-", dir=workdir)
        self.ca_path = os.path.join(self._dir, "ca.crt")
        cert, key = os.path.join(self._dir, "server.crt"), os.path.join(self._dir, "server.key")
        make_ca_and_server_cert(self.ca_path, cert, key, hosts=(address, "127.0.0.1", "localhost"))
        os.chmod(self._dir, 0o755)
        os.chmod(self.ca_path, 0o644)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._front, port = listen_on_loopback(address=address)
        self._storage, storage_port = listen_on_loopback(address=address)
        self.host = f"{address}:{port}"
        self.storage_host = f"{address}:{storage_port}"
        for listener, is_front in ((self._front, True), (self._storage, False)):
            threading.Thread(target=self._accept_loop, args=(listener, is_front), daemon=True).start()

    def stop(self):
        self.release.set()
        for listener in (self._front, self._storage):
            try:
                listener.close()
            except OSError:
                pass

    def _accept_loop(self, listener, is_front):
        while True:
            try:
                conn, addr = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, addr, is_front), daemon=True).start()

    def _serve(self, conn, addr, is_front):
        try:
            conn.settimeout(60)
            if is_front:
                conn = self._tls.wrap_socket(conn, server_side=True)
            self._handler(is_front)(conn, addr, None)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _relay(self, method, path, headers, body, credentials):
        reg = self.registry
        if reg.tls:
            upstream = http.client.HTTPSConnection(reg.host, timeout=60,
                                                   context=ssl.create_default_context(cafile=reg.ca_path))
        else:
            upstream = http.client.HTTPConnection(reg.host, timeout=60)
        out = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "authorization")}
        if credentials:
            out["Authorization"] = headers.get("Authorization") if credentials == "client" else credentials
            if out["Authorization"] is None:
                del out["Authorization"]
        try:
            upstream.request(method, path, body=body, headers=out)
            r = upstream.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            upstream.close()

    def _rewrite_location(self, value, authority, scheme):
        """The registry's Location (absolute, naming itself, or a path) on authority instead."""
        m = re.match(r"^https?://[^/]+(/.*)$", value)
        path = m.group(1) if m else value
        return f"{scheme}://{authority}{path}" if path.startswith("/") else value

    def _handler(self, is_front):
        front = self

        class Handler(RelayHandler):
            def _handle(self):
                headers = {k.lower(): v for k, v in self.headers.items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                (front.front_requests if is_front else front.storage_requests).append(
                    (self.command, self.path, headers))
                head_only = self.command == "HEAD"
                if not is_front and front.hold_patches and self.command == "PATCH":
                    front.release.wait(300)
                upload = UPLOAD_PATH.match(self.path)
                if is_front and upload and front.mode == "redirect" and self.command in ("PATCH", "PUT"):
                    return self._answer(307, [("Location", f"http://{front.storage_host}{self.path}")], b"", head_only)
                reg = front.registry
                if is_front:
                    credentials = "client"
                else:
                    credentials = "Basic " + base64.b64encode(
                        f"{reg.username}:{reg.password}".encode()).decode() if reg.username else None
                status, answer_headers, answer = front._relay(self.command, self.path, dict(self.headers.items()),
                                                              body, credentials)
                fixed = []
                for k, v in answer_headers:
                    if k.lower() == "location" and "/blobs/uploads/" in v:
                        to_storage = not is_front or front.mode == "location"
                        v = front._rewrite_location(v, front.storage_host if to_storage else front.host,
                                                    "http" if to_storage else "https")
                    fixed.append((k, v))
                self._answer(status, fixed, answer, head_only)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
