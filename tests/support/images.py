"""Images for tests, all made on this machine: nothing can be pulled.

Two ways to get an image into the local registry:

* ``make_base_image`` / ``make_base_index`` write a minimal base image in pure
  Python over the registry's HTTP API (monolithic blob upload, manifest PUT).
  The base has no build tool: one gzip layer holding Debian's static
  ``/bin/busybox`` with ``sh ls cat echo sleep`` symlinks, and
  ``/etc/base-release`` containing ``marker``. The layer and config are
  deterministic, so the same marker gives the same digest and two markers give
  two versions of "the same" base. This is also a reference for how an image
  is assembled: ``rootfs.diff_ids`` hold the sha256 of the *uncompressed* tar,
  while the manifest lists the digest of the *compressed* blob.

* ``Buildah.build_app`` builds an application image FROM such a base with
  buildah (``bud --isolation chroot``, vfs storage, no daemon) and pushes it.

What buildah 1.28 records (checked by tests/integration/test_stack_components.py):
the pushed image is an OCI manifest whose ``annotations`` carry

* ``org.opencontainers.image.base.name``: the FROM reference *as written in the
  Containerfile*, normalised to a full name: ``FROM host/base:1`` gives
  ``host/base:1``, ``FROM host/base@sha256:...`` gives ``host/base@sha256:...``.
  A tag is not resolved into a digest there.
* ``org.opencontainers.image.base.digest``: the digest of the manifest buildah
  pulled, which for a single-platform base is the base's manifest digest.
  For a multi-platform base (an index) it is the digest of the *platform
  manifest* (linux/amd64 here), not of the index, whichever way FROM names it.
  Code that compares it with a HEAD of the base tag must resolve the index to
  that platform (or compare against both).

Other things buildah 1.28 does here: it pushes an OCI manifest even when the
base is Docker v2 (``bud``'s default ``--format oci``); without ``--layers``
the steps of one build (COPY, RUN) become a single new layer, and their
history entries carry ``empty_layer: true`` except the last one, whose
``comment`` is ``FROM <base as written>``; it adds the label
``io.buildah.version``; timestamps make every build a new digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from imagepatch.core.oci import (  # noqa: F401 - the base annotations are re-exported
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
)
from tests.support.registry import (
    DOCKER_LIST,
    DOCKER_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    LocalRegistry,
    sha256_digest,
)

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, no libc needed
APPLETS = ("sh", "ls", "cat", "echo", "sleep")
# Fixed timestamps keep layers and configs byte-identical between runs.
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

LABEL_REVISION = "org.opencontainers.image.revision"

Media = Literal["oci", "docker"]


@dataclass(frozen=True)
class ImageRef:
    """An image in a registry. ``repository`` includes the host: ``127.0.0.1:5000/base``."""

    repository: str
    tag: str | None
    digest: str

    @property
    def ref(self) -> str:
        """``repo:tag`` (or the pinned form when there is no tag)."""
        return f"{self.repository}:{self.tag}" if self.tag else self.pinned

    @property
    def pinned(self) -> str:
        """``repo@sha256:...``: what the operator writes into a Deployment."""
        return f"{self.repository}@{self.digest}"

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The repository path inside the registry (``base``), as used in ``/v2/<name>/``."""
        return self.repository.split("/", 1)[1]


def unique_repo(prefix: str) -> str:
    """A repository name no other test uses: the registry lives for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- base images in pure Python ---------------------------------------------------


@lru_cache(maxsize=1)
def _busybox_bytes() -> bytes:
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} not found: apt-get install busybox-static")
    return BUSYBOX.read_bytes()


def _tar_entry(
    name: str, kind: bytes, mode: int, *, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


@lru_cache(maxsize=16)
def busybox_layer(marker: str) -> tuple[bytes, str]:
    """(gzip layer blob, diff_id) of the base rootfs for ``marker``.

    The diff_id is the sha256 of the uncompressed tar; the gzip uses mtime 0
    so the compressed blob is reproducible too.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("bin", "etc", "tmp"):
            # /tmp: many build steps and shells expect it to exist.
            tar.addfile(_tar_entry(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        data = _busybox_bytes()
        tar.addfile(
            _tar_entry("bin/busybox", tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data)
        )
        for applet in APPLETS:
            tar.addfile(_tar_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        release = f"{marker}\n".encode()
        tar.addfile(
            _tar_entry("etc/base-release", tarfile.REGTYPE, 0o644, size=len(release)),
            io.BytesIO(release),
        )
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=6, mtime=0), sha256_digest(raw)


def _json_bytes(obj: object) -> bytes:
    # Compact and sorted: stable bytes, hence stable digests.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def _push_platform_manifest(
    registry: LocalRegistry, repo: str, marker: str, arch: str, variant: str | None, media: Media,
    created: str = CREATED,
) -> tuple[bytes, str]:
    """Push layer, config and manifest (untagged); return (manifest bytes, media type)."""
    layer, diff_id = busybox_layer(marker)
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            "Cmd": ["/bin/sh"],
            "Labels": {"dev.imagepatch.test.base-release": marker},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": f"imagepatch tests: busybox rootfs, /etc/base-release={marker}",
            }
        ],
    }
    if variant:
        config["variant"] = variant
    config_bytes = _json_bytes(config)
    registry.push_blob(repo, layer)
    registry.push_blob(repo, config_bytes)
    if media == "oci":
        manifest_type, config_type, layer_type = OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP
    else:
        manifest_type, config_type, layer_type = DOCKER_V2, DOCKER_CONFIG, DOCKER_LAYER_GZIP
    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": _descriptor(config_type, config_bytes),
            "layers": [_descriptor(layer_type, layer)],
        }
    )
    registry.put_manifest(repo, sha256_digest(manifest), manifest, manifest_type)
    return manifest, manifest_type


def make_base_image(
    registry: LocalRegistry,
    repo: str,
    tag: str,
    *,
    marker: str,
    arch: str = "amd64",
    media: Media = "oci",
    created: str = CREATED,
) -> ImageRef:
    """Push a single-platform busybox base as ``repo:tag`` and return it.

    ``repo`` is the name inside the registry (``base``, ``team/base``).
    ``media="docker"`` writes a Docker v2 manifest instead of an OCI one.
    ``created`` is the image config's creation time (RFC 3339).
    """
    manifest, manifest_type = _push_platform_manifest(
        registry, repo, marker, arch, None, media, created
    )
    digest = registry.put_manifest(repo, tag, manifest, manifest_type)
    return ImageRef(f"{registry.host}/{repo}", tag, digest)


def make_base_index(
    registry: LocalRegistry,
    repo: str,
    tag: str,
    *,
    marker: str,
    platforms: tuple[tuple[str, str | None], ...] = (("amd64", None), ("arm64", "v8")),
    media: Media = "oci",
) -> ImageRef:
    """Push a multi-platform base (OCI index, or Docker manifest list) as ``repo:tag``.

    Every platform carries the same amd64 busybox: this is a test artifact,
    only its structure matters. The returned digest is the index digest; use
    ``platform_digest`` for a platform's manifest digest.
    """
    entries = []
    for arch, variant in platforms:
        manifest, manifest_type = _push_platform_manifest(
            registry, repo, marker, arch, variant, media
        )
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        entries.append({**_descriptor(manifest_type, manifest), "platform": platform})
    index_type = OCI_INDEX if media == "oci" else DOCKER_LIST
    index = _json_bytes({"schemaVersion": 2, "mediaType": index_type, "manifests": entries})
    digest = registry.put_manifest(repo, tag, index, index_type)
    return ImageRef(f"{registry.host}/{repo}", tag, digest)


def platform_digest(registry: LocalRegistry, image: ImageRef, arch: str = "amd64") -> str:
    """The digest of ``image``'s linux/<arch> manifest (``image`` must be an index)."""
    body, media_type, _ = registry.get_manifest(image.name, image.digest)
    if media_type not in (OCI_INDEX, DOCKER_LIST):
        raise ValueError(f"{image.pinned} is a {media_type}, not an index")
    for entry in json.loads(body)["manifests"]:
        platform = entry.get("platform", {})
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            return entry["digest"]
    raise LookupError(f"{image.pinned} has no linux/{arch} manifest")


# -- buildah ------------------------------------------------------------------------


class BuildError(RuntimeError):
    pass


class Buildah:
    """buildah with private storage and config, pushing to one ``LocalRegistry``.

    Nothing global is read or written: storage lives under ``workdir`` (vfs,
    so no overlay or fuse is needed), and registries.conf, policy.json,
    containers.conf, storage.conf and the auth file are private files passed
    through the CONTAINERS_* environment variables. registries.conf marks the
    local registry insecure (plain HTTP) and turns short names off: every
    reference in these tests is fully qualified. ``--isolation chroot`` is
    required: the default (OCI runtime) needs cgroups, which this machine lacks.
    """

    def __init__(self, registry: LocalRegistry, workdir: Path, *, binary: str = "buildah") -> None:
        found = shutil.which(binary)
        if not found:
            raise FileNotFoundError(f"{binary} not found: apt-get install buildah")
        self.binary = found
        self.registry = registry
        self.workdir = workdir
        self.root = workdir / "root"
        self.runroot = workdir / "runroot"
        self.contexts = workdir / "contexts"
        self.log_path = workdir / "buildah.log"
        tmp = workdir / "tmp"
        for d in (self.root, self.runroot, self.contexts, tmp):
            d.mkdir(parents=True, exist_ok=True)

        conf = workdir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "registries.conf").write_text(
            "unqualified-search-registries = []\n"
            'short-name-mode = "disabled"\n'
            "\n[[registry]]\n"
            f'location = "{registry.host}"\n'
            "insecure = true\n"
        )
        (conf / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (conf / "containers.conf").write_text("[containers]\n[engine]\n")
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        (conf / "auth.json").write_text('{"auths": {}}')
        self.policy = conf / "policy.json"
        self.env = {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "REGISTRY_AUTH_FILE": str(conf / "auth.json"),
            "BUILDAH_ISOLATION": "chroot",
            "STORAGE_DRIVER": "vfs",
            # buildah stages big temporary files under $TMPDIR (default /var/tmp).
            "TMPDIR": str(tmp),
        }
        self.timings: list[tuple[str, float]] = []  # (image ref, seconds for build + push)

    def _run(self, *args: str, timeout: float = 600) -> str:
        argv = [
            self.binary,
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        with open(self.log_path, "a") as log:
            log.write(
                f"$ {' '.join(argv)}  # rc={proc.returncode} {time.monotonic() - started:.1f}s\n"
            )
            log.write(proc.stdout + proc.stderr + "\n")
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip().splitlines()
            raise BuildError(
                f"buildah {args[0]} failed (rc={proc.returncode}):\n" + "\n".join(out[-30:])
            )
        return proc.stdout

    def build(
        self, context: Path, repo: str, tag: str, *, containerfile: str = "Containerfile"
    ) -> ImageRef:
        """Build ``context`` and push it as ``<registry>/<repo>:<tag>``."""
        target = f"{self.registry.host}/{repo}:{tag}"
        started = time.monotonic()
        self._run(
            "bud",
            "--isolation", "chroot",
            "--tls-verify=false",
            "--pull=always",
            "--signature-policy", str(self.policy),
            "-f", str(context / containerfile),
            "-t", target,
            str(context),
        )  # fmt: skip
        digest_file = context / ".pushed-digest"
        self._run(
            "push",
            "--tls-verify=false",
            "--signature-policy", str(self.policy),
            "--digestfile", str(digest_file),
            target,
            f"docker://{target}",
        )  # fmt: skip
        self.timings.append((target, time.monotonic() - started))
        digest = digest_file.read_text().strip()
        # The registry is the source of truth for what was pushed.
        registry_digest = self.registry.head_digest(repo, tag)
        if registry_digest != digest:
            raise BuildError(f"buildah reported {digest}, the registry has {registry_digest}")
        return ImageRef(f"{self.registry.host}/{repo}", tag, digest)

    def build_app(
        self,
        base: ImageRef,
        repo: str,
        tag: str,
        *,
        files: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        revision: str | None = None,
        pinned: bool = True,
    ) -> ImageRef:
        """Build an app image ``FROM base`` (by digest, or by tag when ``pinned=False``).

        The Containerfile COPYs ``files`` (path under /app -> text) into /app,
        RUNs a shell command (so the base's /bin/sh really executes), and sets
        the ``org.opencontainers.image.revision`` label (``revision``, by
        default a hash of ``files``) plus ``labels``.
        """
        files = files or {"app.txt": f"{repo}:{tag}\n"}
        if revision is None:
            revision = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
        context = self.contexts / f"{repo.replace('/', '_')}-{tag}-{uuid.uuid4().hex[:6]}"
        (context / "app").mkdir(parents=True)
        for rel, text in files.items():
            path = (context / "app" / rel).resolve()
            if not path.is_relative_to(context / "app"):
                raise ValueError(f"file {rel!r} escapes /app")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        all_labels = {LABEL_REVISION: revision, **(labels or {})}
        # json.dumps gives double-quoted, escaped strings, which LABEL accepts.
        label_line = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in all_labels.items())
        (context / "Containerfile").write_text(
            f"FROM {base.pinned if pinned else base.ref}\n"
            "COPY app/ /app/\n"
            'RUN cat /etc/base-release > /app/.built-on && echo "built" >> /app/.built-on\n'
            f"LABEL {label_line}\n"
        )
        return self.build(context, repo, tag)

    def cleanup(self) -> None:
        """Remove the private storage (vfs keeps a full copy of every layer)."""
        if os.geteuid() != 0:
            # Rootless storage holds files owned by sub-uids; only the user
            # namespace can delete them.
            subprocess.run(
                [self.binary, "unshare", "rm", "-rf", str(self.root), str(self.runroot)],
                env=self.env, capture_output=True, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


def strip_lineage(registry: LocalRegistry, image: ImageRef) -> ImageRef:
    """Re-push ``image`` under its tag without the base it records: what a build
    that writes no ``org.opencontainers.image.base.*`` annotations (or labels) pushes.

    The layers and config are unchanged, so the image is still built on its base;
    only its manifest no longer says so. Returns the new digest.
    """
    repo = image.name
    body, media_type, _ = registry.get_manifest(repo, image.digest)
    manifest = json.loads(body)
    manifest.pop("annotations", None)
    digest = registry.put_manifest(repo, image.tag or image.digest, _json_bytes(manifest), media_type)
    return ImageRef(image.repository, image.tag, digest)
