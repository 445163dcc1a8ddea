"""A small Docker registry token server (the "auth: token" flow of distribution).

It really checks credentials (HTTP Basic on GET, or the OAuth2 password grant on POST) and grants
only the scope actions the user is allowed, like Docker Hub: an unknown user or a wrong password
gets 401; a scope the user may not have is granted with no actions, so the registry answers 401
insufficient_scope. Tokens are ES256 JWTs that carry the signing certificate in x5c; the registry
checks that chain against its rootcertbundle.
"""
import base64
import fnmatch
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from .certs import make_signing_cert


class TokenIssuer:
    """acl: {user: [(repo glob, {"pull", "push", ...}), ...]}; the first matching glob wins."""

    def __init__(self, cert_path, service, issuer, users, acl, lifetime=300):
        self.cert_path = cert_path
        self.service = service
        self.issuer = issuer
        self.users = dict(users)
        self.acl = acl
        self.lifetime = lifetime
        self.requests = []  # (method, path, user or None, status), for assertions
        self.issued = []  # every token handed out (tests check none is ever printed)
        self._lock = threading.Lock()
        self._key, der = make_signing_cert(cert_path)
        self._x5c = [base64.b64encode(der).decode()]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    # --- policy -----------------------------------------------------------------------------
    def allowed_actions(self, user, repo):
        for pattern, actions in self.acl.get(user, []):
            if fnmatch.fnmatchcase(repo, pattern):
                return set(actions)
        return set()

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if rtype != "repository":
                continue
            allowed = self.allowed_actions(user, name) if user else set()
            granted = [a for a in actions if a in allowed]
            access.append({"type": rtype, "name": name, "actions": granted})
        return access

    def make_token(self, user, access):
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "iat": now,
                  "nbf": now - 10, "exp": now + self.lifetime, "jti": uuid.uuid4().hex,
                  "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        with self._lock:
            self.issued.append(token)
        return token

    def check_password(self, user, password):
        return user in self.users and self.users[user] == password

    def _record(self, *entry):
        with self._lock:
            self.requests.append(entry)

    # --- HTTP ---------------------------------------------------------------------------------
    def _handler_class(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, extra=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, user, password, scopes, service):
                if service and service != issuer.service:
                    issuer._record(self.command, self.path, user, 400)
                    return self._send(400, {"errors": [{"code": "UNSUPPORTED",
                                                        "message": "unknown service"}]})
                if user is not None and not issuer.check_password(user, password):
                    issuer._record(self.command, self.path, user, 401)
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED",
                                                        "message": "invalid credentials"}]},
                                      [("WWW-Authenticate", 'Basic realm="aishell-test"')])
                token = issuer.make_token(user, issuer.grant(user, scopes))
                issuer._record(self.command, self.path, user, 200)
                self._send(200, {"token": token, "access_token": token,
                                 "expires_in": issuer.lifetime,
                                 "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = password = None
                auth = self.headers.get("Authorization", "")
                if auth.lower().startswith("basic "):
                    try:
                        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    except ValueError:
                        return self._send(400, {"errors": [{"code": "BAD_AUTH"}]})
                self._answer(user, password, query.get("scope", []),
                             query.get("service", [None])[0])

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type", [""])[0] != "password":
                    return self._send(400, {"error": "unsupported_grant_type"})
                scopes = " ".join(form.get("scope", [])).split()
                self._answer(form.get("username", [""])[0], form.get("password", [""])[0],
                             scopes, form.get("service", [None])[0])

        return Handler
