"""A real local HTTP receiver for notification tests: records every POST, answers as told.

``Receiver.start()`` serves on 127.0.0.1 (a free port) in a thread. Each
path answers with the status set by ``answer(path, status)`` (200 by default);
every request is kept (path, headers, body) for the test to check, and
``wait_for(path, n)`` waits until ``n`` requests reached a path.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.wait import wait_for


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls) -> Receiver:
        holder: dict[str, Receiver] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver = holder["r"]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.get(self.path, 200)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        receiver = cls(server)
        holder["r"] = receiver
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return receiver

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self, path: str, status: int) -> None:
        with self.lock:
            self.statuses[path] = status

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, n: int = 1, *, timeout: float = 60.0) -> list[Received]:
        return wait_for(lambda: (got if len(got := self.at(path)) >= n else None),
                        timeout=timeout, interval=0.1, what=f"{n} request(s) to {path}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
