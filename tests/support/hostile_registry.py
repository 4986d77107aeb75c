"""A hostile OCI registry: a real HTTP server that answers what no registry should.

``HostileRegistry.start()`` listens on a free loopback port and serves the
files of ``tests/data/`` (manifests, indexes, configs, token answers) plus
behaviours generated on the fly. Clients reach it as a configured mirror
(``endpoints={HOST: registry.url}``), as the operator would reach a
``--registry-endpoint``, so the loopback address is "configured" and what is
tested is what the *registry* makes the client do. Repositories, by first
path component:

* ``manifests/<stem>``, ``indexes/<stem>``: ``tests/data/<folder>/<stem>.*``
  as the manifest of every tag, with the Content-Type its ``expected.yaml``
  gives; HEAD answers the bytes' digest;
* ``configs/<stem>``: a generated manifest whose config blob is
  ``tests/data/configs/<stem>.*``;
* ``tokens/<stem>``: 401 with a Bearer challenge whose realm is this server's
  ``/token/<stem>``, which answers ``tests/data/tokens/<stem>.*``; a request
  bearing ``hostile-ok-token`` gets a valid manifest;
* ``huge/x``: a manifest that streams ``HUGE_BYTES`` (1 GiB) without a
  Content-Length; ``gzip-bomb/x``: a small gzip body that decodes to
  ``BOMB_BYTES``; ``drip/x``: a few bytes a second; ``huge-error/x``: a 400
  with a 16 MiB error body; ``huge-token/x``: a realm answering 16 MiB;
* ``redirect-loop/x``: every blob GET redirects to itself;
  ``redirect-metadata/x`` and ``redirect-http/x``: blob GETs redirect to
  169.254.169.254 and to plain http; ``redirect-manifest/x``: a manifest GET
  redirects (never followed);
* ``realm-metadata/x``, ``realm-metadata6/x``: a realm at 169.254.169.254 and
  at [fd00:ec2::254];
* ``bad-digest-header/x``: a Docker-Content-Digest that is not a digest;
  ``wrong-digest-header/x``: a valid digest of other bytes;
* ``deflate/x``: a valid manifest sent with ``Content-Encoding: deflate``;
  ``bad-gzip/x``: ``gzip`` that is not; ``brotli/x``: an encoding the client
  does not speak;
* ``realm-not-a-url/x``: a realm that does not parse; ``redirect-invalid/x``:
  a blob redirect to a URL that does not parse;
* ``redirect-cross/x``: needs a Bearer token, then redirects blob GETs to
  ``cross_target`` (another server): the token must not follow;
* ``realm-at/x``: a Bearer challenge whose realm is ``realm_target`` +
  ``/token/good`` (a name the test chooses), then serves ``ok``;
* ``ok/x``: a valid manifest with base annotations, the healthy case.

Every request is recorded in ``requests`` (method, path), so a test can prove
that nothing was fetched from where it must not be.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from imagepatch.core.oci import OCI_MANIFEST

DATA = Path(__file__).resolve().parent.parent / "data"
HUGE_BYTES = 1024**3
BOMB_BYTES = 256 * 1024**2
OK_TOKEN = "hostile-ok-token"

BASE_NAME = "docker.io/library/busybox:1.36"
BASE_DIGEST = "sha256:" + "1" * 64


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def data_file(folder: str, stem: str) -> Path:
    """The file ``tests/data/<folder>/<stem>.*`` (its name is the table's key)."""
    matches = [p for p in (DATA / folder).iterdir() if p.name.split(".")[0] == stem]
    if len(matches) != 1:
        raise KeyError(f"{folder}/{stem}")
    return matches[0]


def table(folder: str) -> dict:
    return yaml.safe_load((DATA / folder / "expected.yaml").read_text())


def _manifest(annotations: dict | None = None, config: bytes = b"{}") -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [],
            **({"annotations": annotations} if annotations else {}),
        }
    ).encode()


OK_MANIFEST = _manifest(
    {"org.opencontainers.image.base.name": BASE_NAME,
     "org.opencontainers.image.base.digest": BASE_DIGEST}
)  # fmt: skip


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-body (as it must, past a cap) is not an error here."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class HostileRegistry:
    """The server; ``url`` is its base URL, ``requests`` what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.cross_target = ""  # base URL that redirect-cross sends blob GETs to
        self.realm_target = ""  # base URL of the realm realm-at names
        self._bomb: bytes | None = None
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                registry._handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                registry._handle(self, head=False)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    def start(cls) -> HostileRegistry:
        registry = cls()
        registry._thread.start()
        return registry

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- answers ---------------------------------------------------------------------------

    def bomb(self) -> bytes:
        """gzip of BOMB_BYTES zero bytes (about 250 KiB), made once."""
        with self._lock:
            if self._bomb is None:
                out = io.BytesIO()
                with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
                    block = bytes(1024 * 1024)
                    for _ in range(BOMB_BYTES // len(block)):
                        gz.write(block)
                self._bomb = out.getvalue()
            return self._bomb

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        self.requests.append(("HEAD" if head else "GET", h.path))
        self.authorizations.append((h.path, h.headers.get("Authorization")))
        path = h.path.split("?", 1)[0]
        if path.startswith("/token/"):
            return self._token(h, path.removeprefix("/token/"))
        if path == "/v2/" or not path.startswith("/v2/"):
            return self._send(h, 200, b"{}", head=head)
        parts = path.removeprefix("/v2/").split("/")
        # /v2/<kind>/<name>/(manifests|blobs)/<ref>
        if len(parts) != 4 or parts[2] not in ("manifests", "blobs"):
            return self._send(h, 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', head=head)
        kind, name, what, ref = parts
        handler = getattr(self, "_" + kind.replace("-", "_"), None)
        if handler is None:
            return self._send(h, 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', head=head)
        return handler(h, name, what, ref, head)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        *,
        head: bool,
        content_type: str = OCI_MANIFEST,
        digest: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        if status < 300 and digest is not False:
            h.send_header("Docker-Content-Digest", digest or sha256(body))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _stream(self, h: BaseHTTPRequestHandler, total: int, *, status: int = 200) -> None:
        """``total`` bytes, chunked, with no Content-Length; stops when the client leaves."""
        h.send_response(status)
        h.send_header("Content-Type", OCI_MANIFEST)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Docker-Content-Digest", BASE_DIGEST)
        h.end_headers()
        chunk = b" " * (1024 * 1024)
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = 0
        try:
            while sent < total:
                h.wfile.write(frame)
                sent += len(chunk)
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    # -- repositories from tests/data ---------------------------------------------------------

    def _from_table(self, h, folder: str, name: str, what: str, head: bool) -> None:
        try:
            path = data_file(folder, name)
        except KeyError:
            return self._send(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', head=head)
        body = path.read_bytes()
        media_type = table(folder)[path.name].get("mediaType", OCI_MANIFEST)
        if what == "blobs":
            return self._send(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', head=head)
        return self._send(h, 200, body, head=head, content_type=media_type)

    def _manifests(self, h, name, what, ref, head) -> None:
        self._from_table(h, "manifests", name, what, head)

    def _indexes(self, h, name, what, ref, head) -> None:
        self._from_table(h, "indexes", name, what, head)

    def _configs(self, h, name, what, ref, head) -> None:
        config = data_file("configs", name).read_bytes()
        if what == "blobs":
            return self._send(h, 200, config, head=head, content_type="application/octet-stream")
        return self._send(h, 200, _manifest(config=config), head=head)

    def _tokens(self, h, name, what, ref, head) -> None:
        if h.headers.get("Authorization") != f"Bearer {OK_TOKEN}":
            challenge = f'Bearer realm="{self.url}/token/{name}",service="hostile"'
            return self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})
        return self._send(h, 200, OK_MANIFEST, head=head)

    def _token(self, h, name: str) -> None:
        if name == "huge":
            return self._stream(h, 16 * 1024**2)
        self._send(h, 200, data_file("tokens", name).read_bytes(), head=False,
                   content_type="application/json", digest=False)  # fmt: skip

    # -- generated behaviours --------------------------------------------------------------------

    def _ok(self, h, name, what, ref, head) -> None:
        if what == "blobs":
            return self._send(h, 200, b"{}", head=head, content_type="application/octet-stream")
        self._send(h, 200, OK_MANIFEST, head=head)

    def _huge(self, h, name, what, ref, head) -> None:
        if head:
            return self._send(h, 200, b"", head=True, digest=BASE_DIGEST)
        self._stream(h, HUGE_BYTES)

    def _gzip_bomb(self, h, name, what, ref, head) -> None:
        self._send(h, 200, self.bomb(), head=head, digest=BASE_DIGEST,
                   headers={"Content-Encoding": "gzip"})  # fmt: skip

    def _drip(self, h, name, what, ref, head) -> None:
        h.send_response(200)
        h.send_header("Content-Type", OCI_MANIFEST)
        h.send_header("Content-Length", str(len(OK_MANIFEST)))
        h.send_header("Docker-Content-Digest", sha256(OK_MANIFEST))
        h.end_headers()
        if head:
            return
        try:
            for byte in OK_MANIFEST:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _huge_error(self, h, name, what, ref, head) -> None:
        if head:
            return self._send(h, 400, b"", head=True)
        self._stream(h, 16 * 1024**2, status=400)

    def _huge_token(self, h, name, what, ref, head) -> None:
        challenge = f'Bearer realm="{self.url}/token/huge",service="hostile"'
        self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})

    def _redirect(self, h, location: str, head: bool) -> None:
        self._send(h, 302, b"", head=head, headers={"Location": location})

    def _redirect_loop(self, h, name, what, ref, head) -> None:
        if what == "manifests":
            return self._ok(h, name, what, ref, head)
        self._redirect(h, h.path, head)

    def _redirect_metadata(self, h, name, what, ref, head) -> None:
        if what == "manifests":
            return self._ok(h, name, what, ref, head)
        self._redirect(h, "http://169.254.169.254/latest/meta-data/iam/", head)

    def _redirect_http(self, h, name, what, ref, head) -> None:
        if what == "manifests":
            return self._ok(h, name, what, ref, head)
        self._redirect(h, "http://storage.example.invalid/blob", head)

    def _redirect_manifest(self, h, name, what, ref, head) -> None:
        self._redirect(h, f"/v2/ok/x/{what}/{ref}", head)

    def _realm_metadata(self, h, name, what, ref, head) -> None:
        challenge = 'Bearer realm="http://169.254.169.254/latest/api/token",service="x"'
        self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})

    def _realm_metadata6(self, h, name, what, ref, head) -> None:
        challenge = 'Bearer realm="https://[fd00:ec2::254]/latest/api/token",service="x"'
        self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})

    def _deflate(self, h, name, what, ref, head) -> None:
        self._send(h, 200, zlib.compress(OK_MANIFEST), head=head, digest=sha256(OK_MANIFEST),
                   headers={"Content-Encoding": "deflate"})  # fmt: skip

    def _bad_gzip(self, h, name, what, ref, head) -> None:
        self._send(h, 200, b"\x1f\x8b\x08\x00garbage-not-gzip", head=head,
                   digest=sha256(OK_MANIFEST), headers={"Content-Encoding": "gzip"})  # fmt: skip

    def _brotli(self, h, name, what, ref, head) -> None:
        self._send(h, 200, b"\x0b\x02\x80", head=head, digest=sha256(OK_MANIFEST),
                   headers={"Content-Encoding": "br"})  # fmt: skip

    def _realm_not_a_url(self, h, name, what, ref, head) -> None:
        challenge = 'Bearer realm="https://[::1/token",service="x"'
        self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})

    def _redirect_invalid(self, h, name, what, ref, head) -> None:
        if what == "manifests":
            return self._ok(h, name, what, ref, head)
        self._redirect(h, "https://[::1/blob", head)

    def _redirect_cross(self, h, name, what, ref, head) -> None:
        if h.headers.get("Authorization") != f"Bearer {OK_TOKEN}":
            challenge = f'Bearer realm="{self.url}/token/good",service="hostile"'
            return self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})
        if what == "manifests":
            return self._ok(h, name, what, ref, head)
        self._redirect(h, f"{self.cross_target}/v2/ok/x/blobs/{ref}", head)

    def _realm_at(self, h, name, what, ref, head) -> None:
        if h.headers.get("Authorization") != f"Bearer {OK_TOKEN}":
            challenge = f'Bearer realm="{self.realm_target}/token/good",service="hostile"'
            return self._send(h, 401, b"{}", head=head, headers={"WWW-Authenticate": challenge})
        self._ok(h, name, what, ref, head)

    def _bad_digest_header(self, h, name, what, ref, head) -> None:
        self._send(h, 200, OK_MANIFEST, head=head, digest="sha256:../../etc/passwd")

    def _wrong_digest_header(self, h, name, what, ref, head) -> None:
        self._send(h, 200, OK_MANIFEST, head=head, digest="sha256:" + "e" * 64)
