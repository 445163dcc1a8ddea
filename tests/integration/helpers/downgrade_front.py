"""A front for a TLS registry that sends blob downloads to plain HTTP on its own port.

One port on 127.0.0.1 speaks both protocols (a connection whose first byte is 0x16, a TLS
handshake record, is TLS; any other is plain HTTP), so https://127.0.0.1:PORT and
http://127.0.0.1:PORT share their authority "127.0.0.1:PORT" and differ only in the scheme, as
https://reg and http://reg do with default ports:

  over TLS    GET /v2/<repo>/blobs/<digest> answers 307 to http://127.0.0.1:PORT/<same path>;
              every other request is relayed to the registry (Authorization included) and
              answered with its response
  plain HTTP  logs the request's headers and serves the blob from the registry's storage

`.plain_requests` and `.tls_requests` are the logs: (method, path, lower-case headers).
"""
import http.client
import os
import re
import socket
import ssl
import tempfile
import threading

from .certs import make_ca_and_server_cert
from .util import RelayHandler, listen_on_loopback

BLOB_PATH = re.compile(r"^/v2/.+/blobs/(sha256:[0-9a-f]{64})$")


class DowngradeFront:
    def __init__(self, registry, workdir=None):
        self.registry = registry
        self.plain_requests = []
        self.tls_requests = []
        self._dir = tempfile.mkdtemp(prefix="downgrade-front-", dir=workdir)
        self.ca_path = os.path.join(self._dir, "ca.crt")
        cert, key = os.path.join(self._dir, "server.crt"), os.path.join(self._dir, "server.key")
        make_ca_and_server_cert(self.ca_path, cert, key)
        os.chmod(self._dir, 0o755)
        os.chmod(self.ca_path, 0o644)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._listener, self.port = listen_on_loopback()
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def stop(self):
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept_loop(self):
        while True:
            try:
                conn, addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn, addr):
        try:
            conn.settimeout(60)
            first = conn.recv(1, socket.MSG_PEEK)
            if first == b"\x16":
                conn = self._tls.wrap_socket(conn, server_side=True)
                self._handler(tls=True)(conn, addr, None)
            elif first:
                self._handler(tls=False)(conn, addr, None)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _handler(self, tls):
        front = self

        class Handler(RelayHandler):
            def _handle(self, head_only):
                headers = {k.lower(): v for k, v in self.headers.items()}
                (front.tls_requests if tls else front.plain_requests).append(
                    (self.command, self.path, headers))
                blob = BLOB_PATH.match(self.path)
                if not tls:
                    if not blob:
                        return self._answer(404, [], b"", head_only)
                    with open(front.registry.blob_data_path(blob.group(1)), "rb") as f:
                        data = f.read()
                    return self._answer(200, [("Content-Type", "application/octet-stream"),
                                              ("Docker-Content-Digest", blob.group(1))],
                                        data, head_only)
                if blob and self.command == "GET":
                    return self._answer(307, [("Location", f"http://{front.host}{self.path}")],
                                        b"", head_only)
                upstream = http.client.HTTPSConnection(
                    front.registry.host, timeout=60,
                    context=ssl.create_default_context(cafile=front.registry.ca_path))
                try:
                    upstream.request(self.command, self.path,
                                     headers={k: v for k, v in self.headers.items()
                                              if k.lower() not in ("host", "connection")})
                    r = upstream.getresponse()
                    self._answer(r.status, r.getheaders(), r.read(), head_only)
                finally:
                    upstream.close()

            def do_GET(self):
                self._handle(False)

            def do_HEAD(self):
                self._handle(True)

        return Handler
