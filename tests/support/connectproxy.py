"""A tiny HTTP CONNECT proxy, for testing clients that tunnel through one (kubeconfig ``proxy-url``).

``ConnectProxy.start(resolve={"apiserver.test": "127.0.0.1"})`` listens on a
free loopback port (``proxy.url``). Each ``CONNECT host:port`` is recorded in
``proxy.tunnels`` (the host and port the client asked for) and tunnelled,
byte for byte, to that port on ``resolve.get(host, host)``: a client can
name a server by a host name no resolver knows, as it would behind a
corporate proxy, and the test still reaches the local API server. Anything
but CONNECT is answered 405. The TLS inside the tunnel is the client's and
the server's own: the proxy never sees it in clear.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from collections.abc import Mapping


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # the request's headers (Host, Proxy-Authorization, ...): not needed
        method, _, rest = line.partition(" ")
        target = rest.split(" ", 1)[0]
        if method != "CONNECT" or ":" not in target:
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        self.server.owner.tunnels.append((host, int(port)))
        try:
            upstream = socket.create_connection(
                (self.server.owner.resolve.get(host, host), int(port)), timeout=10)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        with upstream:
            _pipe(self.connection, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes."""
    a.setblocking(False)
    b.setblocking(False)
    while True:
        readable, _, _ = select.select([a, b], [], [], 30)
        if not readable:
            return
        for source in readable:
            other = b if source is a else a
            try:
                data = source.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ConnectProxy


class ConnectProxy:
    def __init__(self, resolve: Mapping[str, str] | None = None) -> None:
        self.resolve = dict(resolve or {})
        self.tunnels: list[tuple[str, int]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    def start(cls, resolve: Mapping[str, str] | None = None) -> ConnectProxy:
        proxy = cls(resolve)
        proxy._thread.start()
        return proxy

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
