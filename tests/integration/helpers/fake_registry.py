"""A tiny fake registry that serves canned responses (plain HTTP on 127.0.0.1).

The real registry refuses to store malformed or oversized manifests, so the tests that need a
registry to *serve* them use this: routes map (method, path) to (status, headers, body). GET /v2/
answers 200 unless a route says otherwise; HEAD of a GET route answers its head. Unknown paths
get a registry-style 404 JSON error. Every request is logged.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeRegistry:
    def __init__(self):
        self.routes = {("GET", "/v2/"): (200, {"Content-Type": "application/json"}, b"{}")}
        self.requests = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path, body, status=200, content_type="application/json", headers=None,
            method="GET"):
        data = body if isinstance(body, bytes) else body.encode()
        h = {"Content-Type": content_type}
        h.update(headers or {})
        self.routes[(method, path)] = (status, h, data)

    def add_manifest(self, repo, reference, body, media_type, digest=None):
        """Serve body as the manifest repo:reference (and by digest, when given)."""
        headers = {"Docker-Content-Digest": digest} if digest else {}
        self.add(f"/v2/{repo}/manifests/{reference}", body, content_type=media_type,
                 headers=headers)
        if digest:
            self.add(f"/v2/{repo}/manifests/{digest}", body, content_type=media_type,
                     headers=headers)

    def add_blob(self, repo, digest, data):
        self.add(f"/v2/{repo}/blobs/{digest}", data, content_type="application/octet-stream",
                 headers={"Docker-Content-Digest": digest})

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, head_only):
                path = self.path.split("?")[0]
                fake.requests.append((self.command, self.path, dict(self.headers)))
                route = fake.routes.get(("GET", path))
                if route is None:
                    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"
                                                   if "/manifests/" in path else "NAME_UNKNOWN",
                                                   "message": "not found"}]}).encode()
                    route = (404, {"Content-Type": "application/json"}, body)
                status, headers, body = route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)

            def do_GET(self):
                self._serve(False)

            def do_HEAD(self):
                self._serve(True)

        return Handler
