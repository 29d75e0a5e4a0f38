"""A real HTTP server on 127.0.0.1 for the download tests: serves payloads, counts requests, scripts failures
and slow drips."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    fail_with: list[int] = field(default_factory=list)  # statuses answered first, one per request
    cut_after: int | None = None  # announce the full length, send only this many bytes, close
    gate: threading.Event | None = None  # hold the response until the test sets it
    announce_length: bool = True  # without Content-Length the body ends when the connection closes
    drip_every_s: float | None = None  # send the body one byte at a time, this long apart


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, **options) -> str:
        self.routes[path] = Route(body, **options)
        self.hits[path] = 0
        return self.url(path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with server._lock:
                    server.hits[path] += 1
                    route = server.routes.get(path)
                    status = route.fail_with.pop(0) if route is not None and route.fail_with else 200
                if route is None:
                    status = 404
                if status != 200:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.gate is not None:
                    route.gate.wait(timeout=120)
                body = route.body if route.cut_after is None else route.body[: route.cut_after]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if route.announce_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    if route.drip_every_s is None:
                        self.wfile.write(body)
                        return
                    for index in range(len(body)):
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                        time.sleep(route.drip_every_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, message_format: str, *args) -> None:  # keep test output clean
                pass

        return Handler


def refused_url(path: str) -> str:
    """A URL on a loopback port where nothing listens: the connection is refused, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
