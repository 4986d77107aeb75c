"""A fault-injecting HTTP reverse proxy, for testing clients against a real server.

``FaultProxy.start(upstream="127.0.0.1:PORT")`` listens on a free loopback
port (``proxy.host``, ``proxy.url``) and forwards every request to the
upstream (the test registry), byte for byte. A test queues faults for the next
requests and then checks what the client did:

* ``respond_next(n, status, retry_after=None)``: answer 429/503/... with an
  optional ``Retry-After``, without forwarding;
* ``reset_next(n)``: close the connection with a TCP RST before answering;
* ``stall_next(n, seconds)``: accept the request and answer nothing for
  ``seconds`` (past the client's timeout), then drop the connection;
* ``corrupt_next(n)``: forward, but flip one byte of the response body;
* ``reject_auth_next(n)``: answer 401 with the Basic challenge even when the
  request carries credentials (a revoked or expired password);
* ``tarpit(seconds=30)``: from now on, hold every request ``seconds``
  before forwarding it (a registry that answers, but at 30 s per request);
  ``tarpit(0)`` ends it;
* ``require_basic()``: answer 401 ``WWW-Authenticate: Basic`` to any request
  without an ``Authorization`` header, as ECR does, and forward the rest;
* ``immutable_tags()``: refuse a manifest PUT to a tag that exists already,
  as an ECR repository with ``imageTagMutability: IMMUTABLE`` does (Security
  Hub control ECR.2): 400 with the registry error ``TAG_INVALID`` and ECR's
  message (the registry-API face of the ECR API's
  ``ImageTagAlreadyExistsException``; Docker and kaniko show it as "tag
  invalid: The image tag '1.4' already exists in the 'app' repository and
  cannot be overwritten because the repository is immutable."). Even the
  same digest is refused. A PUT by digest, or to a new tag, is forwarded.

Faults are consumed in order, one per request. Every request is recorded
(``requests``: method, path, headers, and what was done with it), so a test
can count what reached the registry and see the headers the client sent.
The server is a ``ThreadingHTTPServer`` speaking HTTP/1.1 keep-alive, so a
client's connection pool behaves as it would against the real registry.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers that describe one hop, not the message: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip


# What a HEAD for a tag accepts, so the registry finds a tag of any manifest type.
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class Fault:
    kind: str  # "respond", "reset", "stall", "corrupt", "reject_auth"
    status: int = 0
    retry_after: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    outcome: str  # "forwarded", "challenged", or the fault kind
    body: bytes = field(default=b"", repr=False)  # the request body, when forwarded

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class FaultProxy:
    """A reverse proxy to ``upstream`` that injects the faults it is told to."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[Recorded] = []
        self.basic_realm: str | None = None
        self.tags_immutable = False
        self.tarpit_seconds = 0.0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A reset or stalled connection is the point of the exercise, not an
        # error worth a traceback on stderr.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"faultproxy-{self.host}", daemon=True
        )

    @classmethod
    def start(cls, upstream: str) -> FaultProxy:
        proxy = cls(upstream)
        proxy._thread.start()
        return proxy

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what to do next -----------------------------------------------------------

    def _queue(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def respond_next(self, n: int, status: int, *, retry_after: float | str | None = None) -> None:
        value = None if retry_after is None else str(retry_after)
        self._queue(n, Fault("respond", status=status, retry_after=value))

    def reset_next(self, n: int) -> None:
        self._queue(n, Fault("reset"))

    def stall_next(self, n: int, seconds: float) -> None:
        self._queue(n, Fault("stall", seconds=seconds))

    def corrupt_next(self, n: int) -> None:
        self._queue(n, Fault("corrupt"))

    def reject_auth_next(self, n: int) -> None:
        self._queue(n, Fault("reject_auth"))

    def require_basic(self, realm: str = "https://proxy.test/") -> None:
        self.basic_realm = realm

    def tarpit(self, seconds: float = 30.0) -> None:
        self.tarpit_seconds = seconds

    def immutable_tags(self, on: bool = True) -> None:
        self.tags_immutable = on

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def count(self, method: str | None = None, *, path_contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            )

    # -- the handler ---------------------------------------------------------------------

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, handler: BaseHTTPRequestHandler, outcome: str, body: bytes = b"") -> None:
        with self._lock:
            self.requests.append(
                Recorded(handler.command, handler.path, dict(handler.headers.items()), outcome,
                         body)
            )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the registry

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # tests read ``requests``; stderr noise helps no one

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.tarpit_seconds:
                    # A tarpit answers, eventually: the client's timeout ends it first.
                    proxy._record(self, "tarpit")
                    if proxy._stopping.wait(proxy.tarpit_seconds):
                        self.close_connection = True
                        return
                fault = proxy._next_fault()
                if fault is None and proxy.basic_realm and not self.headers.get("Authorization"):
                    proxy._record(self, "challenged")
                    self._answer(401, {"WWW-Authenticate": f'Basic realm="{proxy.basic_realm}"'})
                    return
                if fault is not None and fault.kind == "reset":
                    proxy._record(self, "reset")
                    self._reset()
                    return
                if fault is not None and fault.kind == "stall":
                    proxy._record(self, "stall")
                    proxy._stopping.wait(fault.seconds)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "respond":
                    proxy._record(self, f"respond {fault.status}")
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    body_out = (
                        b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
                        if fault.status == 429
                        else b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
                    )
                    self._answer(fault.status, headers, body_out)
                    return
                if fault is not None and fault.kind == "reject_auth":
                    proxy._record(self, "reject_auth")
                    realm = proxy.basic_realm or "https://proxy.test/"
                    self._answer(401, {"WWW-Authenticate": f'Basic realm="{realm}"'})
                    return
                if fault is None and proxy.tags_immutable and self._overwrites_a_tag():
                    proxy._record(self, "immutable")
                    repo, tag = self._manifest_target()
                    message = (
                        f"The image tag '{tag}' already exists in the '{repo}' repository and "
                        "cannot be overwritten because the repository is immutable."
                    )
                    self._answer(400, {}, json.dumps(
                        {"errors": [{"code": "TAG_INVALID", "message": message}]}).encode())
                    return
                proxy._record(self, "forwarded" if fault is None else fault.kind, body)
                self._forward(body, corrupt=fault is not None and fault.kind == "corrupt")

            def _manifest_target(self) -> tuple[str, str]:
                path = self.path.split("?", 1)[0]
                repo, _, ref = path.removeprefix("/v2/").rpartition("/manifests/")
                return repo, ref

            def _overwrites_a_tag(self) -> bool:
                if self.command != "PUT" or "/manifests/" not in self.path:
                    return False
                repo, ref = self._manifest_target()
                if ":" in ref:  # a digest: content-addressed, never "overwritten"
                    return False
                conn = http.client.HTTPConnection(self.upstream_host, timeout=30)
                try:
                    conn.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={
                        "Accept": ", ".join(_MANIFEST_TYPES),
                        **({"Authorization": self.headers["Authorization"]}
                           if self.headers.get("Authorization") else {})})
                    return conn.getresponse().status == 200
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _reset(self) -> None:
                # SO_LINGER with a zero timeout makes close() send RST, which
                # the client sees as "connection reset by peer".
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _forward(self, body: bytes, *, corrupt: bool) -> None:
                conn = http.client.HTTPConnection(self.upstream_host, timeout=30)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = [
                        (k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP
                    ]
                    declared = resp.getheader("Content-Length")
                finally:
                    conn.close()
                if corrupt and data:
                    data = bytes([data[0] ^ 0x01]) + data[1:]
                self.send_response(resp.status)
                for key, value in out_headers:
                    self.send_header(key, value)
                # HEAD keeps the upstream's length (of the body it did not send).
                length = declared if self.command == "HEAD" and declared else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            upstream_host = proxy.upstream
            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler

    def __repr__(self) -> str:
        return f"FaultProxy({self.host} -> {self.upstream})"
