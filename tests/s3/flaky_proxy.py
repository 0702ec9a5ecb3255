"""An HTTP proxy in front of the moto server that injects S3's transient and permanent failures.

Real sockets and real HTTP: the job's boto3 client talks to the proxy exactly
as it would to S3, and sees what S3 sends when it is overloaded (500, 503
SlowDown), when a connection drops before the answer or in the middle of a
body, or when access is refused (403).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Fault:
    """``action`` for the next ``times`` requests whose method is ``method`` and whose path contains ``contains``."""

    method: str
    contains: str
    action: str  # "500", "503", "403", "drop" (close without answering), "cut" (close half-way through the body)
    times: int = 1


class FlakyProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.get_delay = 0.0  # seconds added before answering every GET: S3's latency, for read-ahead measurements
        self.requests: list[tuple[str, str, str]] = []  # (method, path, what the proxy did)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output quiet
                pass

            def _handle(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def count(self, method: str, contains: str) -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and contains in p)

    def _take_fault(self, method: str, path: str) -> str:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.contains in path:
                    fault.times -= 1
                    return fault.action
        return ""

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        action = self._take_fault(h.command, h.path)
        if self.get_delay and h.command == "GET":
            time.sleep(self.get_delay)
        with self._lock:
            self.requests.append((h.command, h.path, action or "forwarded"))
        if action in _ERRORS:
            status, code, message = _ERRORS[action]
            payload = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                "<RequestId>proxy</RequestId></Error>" % (code, message)
            ).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(0 if h.command == "HEAD" else len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        if action == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        upstream = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(h.command, h.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            h.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    h.send_header(key, value)
            declared = response.getheader("Content-Length") if h.command == "HEAD" else str(len(data))
            h.send_header("Content-Length", declared or "0")
            h.end_headers()
            if h.command == "HEAD":
                return
            if action == "cut":  # the connection breaks off half-way through the body
                h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            h.wfile.write(data)
        finally:
            upstream.close()
