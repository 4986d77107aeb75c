"""A real OCI registry for tests: Debian's ``docker-registry`` on 127.0.0.1.

``LocalRegistry.start(workdir)`` runs ``/usr/bin/docker-registry serve
config.yml`` with filesystem storage under ``workdir`` and deletes enabled, on
a free loopback port, and waits until ``GET /v2/`` answers. Setting
``IMAGEPATCH_TEST_REGISTRY=host:port`` uses an existing plain-HTTP registry
instead (``LocalRegistry.from_env()``).

The helpers here (HEAD for a digest, GET/PUT of manifests, monolithic blob
upload) are the minimum tests need. They always send the full Accept list:
without the index types a HEAD of an index is a 404, and with no Accept at all
docker-registry down-converts a Docker v2 manifest to schema1, which has a
different digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx

from imagepatch.core.oci import (  # noqa: F401 - re-exported to the tests
    DOCKER_LIST,
    DOCKER_V2,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
)
from tests.support.ports import ServerProcess, http_ok

REGISTRY_BINARY = "/usr/bin/docker-registry"
ENV_VAR = "IMAGEPATCH_TEST_REGISTRY"

_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  # A fixed secret silences the "no secret configured" warning on every start.
  secret: imagepatch-tests
health:
  storagedriver:
    enabled: false
"""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryError(RuntimeError):
    pass


class LocalRegistry:
    """A plain-HTTP registry at ``host`` (``127.0.0.1:PORT``), maybe owned by us."""

    def __init__(self, host: str, *, server: ServerProcess | None = None) -> None:
        self.host = host
        self.url = f"http://{host}"
        self._server = server
        # One keep-alive client: loopback HEADs cost ~2 ms each this way.
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 30.0) -> LocalRegistry:
        binary = shutil.which("docker-registry") or REGISTRY_BINARY
        if not Path(binary).exists():
            raise FileNotFoundError(
                f"{REGISTRY_BINARY} not found: apt-get install docker-registry, "
                f"or set {ENV_VAR}=host:port to use a running registry"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        storage = workdir / "storage"
        storage.mkdir(exist_ok=True)
        config = workdir / "config.yml"

        def argv(port: int) -> list[str]:
            # The config carries the port, so rewrite it on every attempt.
            config.write_text(_CONFIG.format(root=storage, port=port))
            return [binary, "serve", str(config)]

        server = ServerProcess.start(
            "docker-registry",
            argv,
            lambda port: http_ok(f"http://127.0.0.1:{port}/v2/", ok=lambda r: r.status_code == 200),
            workdir / "registry.log",
            timeout=timeout,
        )
        return cls(f"127.0.0.1:{server.port}", server=server)

    @classmethod
    def from_env(cls) -> LocalRegistry | None:
        """The registry named by ``IMAGEPATCH_TEST_REGISTRY``, or None when unset."""
        host = os.environ.get(ENV_VAR, "").strip()
        if not host:
            return None
        host = host.removeprefix("http://").rstrip("/")
        reg = cls(host)
        try:
            resp = reg.http.get("/v2/")
        except httpx.TransportError as exc:
            raise RegistryError(f"{ENV_VAR}={host}: registry does not answer: {exc}") from exc
        if resp.status_code != 200:
            raise RegistryError(f"{ENV_VAR}={host}: GET /v2/ returned {resp.status_code}")
        return reg

    def stop(self) -> None:
        self.http.close()
        if self._server is not None:
            self._server.stop()

    @property
    def log_path(self) -> Path | None:
        return self._server.log_path if self._server else None

    def _error(self, what: str, resp: httpx.Response) -> RegistryError:
        msg = f"{what}: HTTP {resp.status_code} {resp.text[:500]}"
        if self._server is not None:
            msg += f"\nregistry log ({self._server.log_path}) tail:\n{self._server.tail(20)}"
        return RegistryError(msg)

    # -- manifests ---------------------------------------------------------------

    def head_digest(self, repo: str, ref: str) -> str:
        """The ``Docker-Content-Digest`` of ``repo:ref`` (tag or digest), via HEAD."""
        resp = self.http.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code != 200:
            raise self._error(f"HEAD {repo}:{ref}", resp)
        return resp.headers["Docker-Content-Digest"]

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(exact bytes, media type, digest) of a manifest or index."""
        resp = self.http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code != 200:
            raise self._error(f"GET manifest {repo}:{ref}", resp)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return resp.content, media_type, resp.headers["Docker-Content-Digest"]

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or digest; returns its digest."""
        resp = self.http.put(
            f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
        )
        if resp.status_code != 201:
            raise self._error(f"PUT manifest {repo}:{ref}", resp)
        digest = sha256_digest(body)
        # The registry must store the exact bytes; if it did not, every digest
        # assertion downstream would be meaningless.
        if resp.headers.get("Docker-Content-Digest", digest) != digest:
            raise RegistryError(
                f"registry digest {resp.headers['Docker-Content-Digest']} != sha256 {digest}"
            )
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        resp = self.http.delete(f"/v2/{repo}/manifests/{digest}")
        if resp.status_code != 202:
            raise self._error(f"DELETE manifest {repo}@{digest}", resp)

    def tags(self, repo: str) -> list[str]:
        resp = self.http.get(f"/v2/{repo}/tags/list")
        if resp.status_code != 200:
            raise self._error(f"GET tags {repo}", resp)
        return resp.json().get("tags") or []

    # -- blobs ---------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob monolithically (POST for a session, then one PUT); returns its digest.

        Skips the upload when the repository already has it.
        """
        digest = sha256_digest(data)
        if self.has_blob(repo, digest):
            return digest
        resp = self.http.post(f"/v2/{repo}/blobs/uploads/")
        if resp.status_code != 202:
            raise self._error(f"POST upload {repo}", resp)
        # Location may be relative or absolute and already carries a query
        # (_state=...), so the digest is appended with the right separator.
        location = resp.headers["Location"]
        sep = "&" if "?" in location else "?"
        resp = self.http.put(
            f"{location}{sep}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if resp.status_code != 201:
            raise self._error(f"PUT blob {repo}@{digest}", resp)
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self.http.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
        if resp.status_code != 200:
            raise self._error(f"GET blob {repo}@{digest}", resp)
        return resp.content

    def __repr__(self) -> str:
        return f"LocalRegistry({self.host!r})"


def _bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd, the only scheme docker-registry accepts."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def start_registry_with_auth(workdir: Path, name: str, auth_yaml: str) -> LocalRegistry:
    """A docker-registry like the session one, plus an ``auth:`` section."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"

    def argv(port: int) -> list[str]:
        config.write_text(_CONFIG.format(root=storage, port=port) + auth_yaml)
        return [REGISTRY_BINARY, "serve", str(config)]

    server = ServerProcess.start(
        name,
        argv,
        # With auth on, an unauthenticated GET /v2/ is a 401: that means "up".
        lambda port: http_ok(f"http://127.0.0.1:{port}/v2/", ok=lambda r: r.status_code == 401),
        workdir / "registry.log",
    )
    return LocalRegistry(f"127.0.0.1:{server.port}", server=server)


def start_htpasswd_registry(workdir: Path, user: str, password: str) -> LocalRegistry:
    """A registry that wants HTTP Basic auth; its own helpers authenticate as ``user``."""
    (workdir / "htpasswd").write_text(f"{user}:{_bcrypt_hash(password)}\n")
    reg = start_registry_with_auth(
        workdir,
        "docker-registry-htpasswd",
        f"auth:\n  htpasswd:\n    realm: imagepatch-tests\n    path: {workdir / 'htpasswd'}\n",
    )
    reg.http.close()
    reg.http = httpx.Client(base_url=reg.url, auth=(user, password), timeout=30.0)
    return reg
