"""A fault-injecting HTTP/1.1 proxy for plain-HTTP registries (threads, raw sockets).

aishell talks to the proxy as if it were the registry (127.0.0.1:PROXYPORT/repo:tag); each client
connection gets its own upstream connection, requests are forwarded as they come (keep-alive
works) and responses are relayed with their framing intact (Content-Length or chunked). Faults,
each for the first `times` requests whose path matches a regex:

  cut_after(pattern, nbytes)       relay the head and nbytes of the body, then reset the socket
                                   (GET requests only, unless method= says otherwise)
  respond(pattern, status, ...)    answer locally (e.g. 429 with Retry-After) without upstream
  throttle(bytes_per_second)       slow every response body down (for SIGINT / kill -9 tests)
  cut_request(pattern, nbytes)     take the head and nbytes of the request body, then reset the
                                   socket without forwarding anything (an upload cut midway)
  clear()                          drop the faults not used up yet

Every request is logged (method, path, headers, status, body bytes sent) for assertions such as
"the rerun sent a Range request".
"""
import re
import socket
import struct
import threading
import time

from .util import free_port, listen_on_loopback


class Fault:
    def __init__(self, kind, pattern, times, method=None, **params):
        self.kind = kind
        self.method = method
        self.pattern = re.compile(pattern)
        self.remaining = times
        self.params = params


class LoggedRequest:
    def __init__(self, method, path, headers):
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.time = time.monotonic()
        self.status = None
        self.body_bytes = 0
        self.fault = None

    def __repr__(self):
        return (f"<{self.method} {self.path} -> {self.status} ({self.body_bytes} bytes)"
                f"{' fault=' + self.fault if self.fault else ''}>")


def _read_head(sock, buf):
    """Read until the end of an HTTP head. Returns (head bytes, rest) or (None, buf) on EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _parse_headers(head):
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


class FaultProxy:
    def __init__(self, upstream_host):
        host, _, port = upstream_host.rpartition(":")
        self.upstream = (host, int(port))
        self.requests = []
        self.faults = []
        self.rate = None  # bytes per second for response bodies, None = unlimited
        self._lock = threading.Lock()
        self._stopping = False
        self._listener, self.port = listen_on_loopback()
        self.host = f"127.0.0.1:{self.port}"
        self.body_started = threading.Event()  # set when any matching body starts flowing
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # --- configuration -------------------------------------------------------------------------
    def cut_after(self, pattern, nbytes, times=1, method="GET"):
        """Cut the next `times` responses to `method` requests matching pattern."""
        with self._lock:
            self.faults.append(Fault("cut", pattern, times, method=method, nbytes=nbytes))

    def respond(self, pattern, status, reason="", headers=None, body=b"", times=1, method=None):
        with self._lock:
            self.faults.append(Fault("respond", pattern, times, method=method, status=status,
                                     reason=reason or {429: "Too Many Requests",
                                                       503: "Service Unavailable",
                                                       401: "Unauthorized",
                                                       404: "Not Found"}.get(status, "Error"),
                                     headers=headers or {}, body=body))

    def cut_request(self, pattern, nbytes, times=1, method=None):
        """Cut the next `times` requests matching pattern after nbytes of their body."""
        with self._lock:
            self.faults.append(Fault("cut_request", pattern, times, method=method, nbytes=nbytes))

    def clear(self):
        with self._lock:
            self.faults = []

    def throttle(self, bytes_per_second):
        self.rate = bytes_per_second

    def requests_matching(self, pattern, method=None):
        rx = re.compile(pattern)
        with self._lock:
            return [r for r in self.requests
                    if rx.search(r.path) and (method is None or r.method == method)]

    def stop(self):
        self._stopping = True
        try:
            self._listener.close()
        except OSError:
            pass

    # --- machinery ----------------------------------------------------------------------------
    def _take_fault(self, method, path):
        with self._lock:
            for fault in self.faults:
                if fault.method not in (None, method):
                    continue
                if fault.remaining > 0 and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None

    def _accept_loop(self):
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = None
        buf = b""
        try:
            while True:
                head, buf = _read_head(client, buf)
                if head is None:
                    return
                request_line, headers = _parse_headers(head)
                method, path = request_line.split(" ")[:2]
                length = int(headers.get("content-length", "0"))
                fault = self._take_fault(method, path)
                if fault and fault.kind == "cut_request":
                    self._cut_request(client, buf, method, path, headers, fault.params["nbytes"])
                    return
                while len(buf) < length:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                entry = LoggedRequest(method, path, headers)
                with self._lock:
                    self.requests.append(entry)
                if fault and fault.kind == "respond":
                    entry.fault = "respond"
                    self._respond_locally(client, entry, fault)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=60)
                    ubuf = b""
                upstream.sendall(head + body)
                ubuf, keep = self._relay_response(upstream, ubuf, client, entry, method, fault)
                if not keep:
                    return
        except OSError:
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _cut_request(self, client, buf, method, path, headers, nbytes):
        entry = LoggedRequest(method, path, headers)
        entry.fault = "cut_request"
        with self._lock:
            self.requests.append(entry)
        while len(buf) < nbytes:
            data = client.recv(65536)
            if not data:
                break
            buf += data
        # RST, not FIN: the client sees its upload broken, not an answer.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _respond_locally(self, client, entry, fault):
        p = fault.params
        body = p["body"] if isinstance(p["body"], bytes) else p["body"].encode()
        lines = [f"HTTP/1.1 {p['status']} {p['reason']}", f"Content-Length: {len(body)}"]
        if "Content-Type" not in p["headers"]:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in p["headers"].items()]
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        entry.status = p["status"]
        entry.body_bytes = len(body)

    def _send_body(self, client, data, entry, budget):
        """Send data, honouring the throttle and a cut budget. Returns the remaining budget
        (None = unlimited) or raises _Cut when the budget runs out."""
        if budget is not None and len(data) >= budget:
            data = data[:budget]
            self._paced_send(client, data, entry)
            raise _Cut()
        self._paced_send(client, data, entry)
        return None if budget is None else budget - len(data)

    def _paced_send(self, client, data, entry):
        if data:
            self.body_started.set()
        step = 16384 if self.rate else len(data) or 1
        for i in range(0, len(data), step):
            chunk = data[i:i + step]
            client.sendall(chunk)
            entry.body_bytes += len(chunk)
            if self.rate:
                time.sleep(len(chunk) / self.rate)

    def _relay_response(self, upstream, ubuf, client, entry, method, fault):
        head, ubuf = _read_head(upstream, ubuf)
        if head is None:
            return ubuf, False
        status_line, headers = _parse_headers(head)
        entry.status = int(status_line.split(" ")[1])
        budget = fault.params["nbytes"] if fault and fault.kind == "cut" else None
        if budget is not None:
            entry.fault = "cut"
        client.sendall(head)
        no_body = method == "HEAD" or entry.status in (204, 304) or 100 <= entry.status < 200
        try:
            if no_body:
                pass
            elif "content-length" in headers:
                remaining = int(headers["content-length"])
                while remaining > 0:
                    if not ubuf:
                        ubuf = upstream.recv(65536)
                        if not ubuf:
                            return ubuf, False
                    chunk, ubuf = ubuf[:remaining], ubuf[remaining:]
                    remaining -= len(chunk)
                    budget = self._send_body(client, chunk, entry, budget)
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                ubuf, budget = self._relay_chunked(upstream, ubuf, client, entry, budget)
            else:  # body until EOF
                while True:
                    if ubuf:
                        budget = self._send_body(client, ubuf, entry, budget)
                    ubuf = upstream.recv(65536)
                    if not ubuf:
                        return ubuf, False
        except _Cut:
            # Abrupt close mid-body: RST rather than FIN so the client sees a broken transfer.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return ubuf, False
        keep = headers.get("connection", "").lower() != "close"
        return ubuf, keep

    def _relay_chunked(self, upstream, ubuf, client, entry, budget):
        while True:
            while b"\r\n" not in ubuf:
                data = upstream.recv(65536)
                if not data:
                    raise OSError("upstream closed mid-chunk")
                ubuf += data
            size_line, _, ubuf = ubuf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            need = size + 2
            while len(ubuf) < need:
                data = upstream.recv(65536)
                if not data:
                    raise OSError("upstream closed mid-chunk")
                ubuf += data
            chunk, ubuf = ubuf[:need], ubuf[need:]
            budget = self._send_body(client, size_line + b"\r\n" + chunk, entry, budget)
            if size == 0:
                return ubuf, budget


class _Cut(Exception):
    pass


def start_proxy(upstream_host):
    return FaultProxy(upstream_host)


__all__ = ["FaultProxy", "start_proxy", "free_port"]
