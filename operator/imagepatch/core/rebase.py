"""Rebase an image onto a new base without a rebuild, as pure functions.

Like ``crane rebase``: an app image built ``FROM base:v1`` starts with the
base's layers. Swapping those for ``base:v2``'s layers, and the base's part of
``rootfs.diff_ids`` and ``history`` for v2's, gives the image a rebuild would
have given **if** the app's own layers do not depend on what the base's files
contained. That is why the strategy is opt-in, and why everything here
refuses (``RebaseRefused``, with a CamelCase reason) instead of guessing.

The adapter (``adapters/builders/rebase.py``) reads manifests and configs and
hands them over as ``Image`` values; this module decides and builds the new
config and manifest bytes; the adapter then checks every layer blob of the
result with ``LayerDigester`` and pushes. Nothing here does I/O.

What is replaced, exactly:

* **Layers.** The first ``N`` manifest layers, ``N`` = the old base's layer
  count, become the new base's layer descriptors (as they are, media types
  included). ``rootfs.diff_ids`` the same way.
* **History**, counted **by entry**: exactly the old base's ``len(history)``
  entries are stripped (they include ``empty_layer`` entries, which have no
  layer, so counting layers would strip the wrong number), then the new
  base's entries are prepended.
* **Annotations.** ``org.opencontainers.image.base.digest`` becomes the new
  base's digest (the *platform manifest* digest when the base is an index, as
  buildah records it); ``base.name`` is kept, except that a name pinned by
  digest (``FROM base@sha256:…``) is re-pinned, so the image never names two
  bases. The same keys among config labels (the fallback source of lineage)
  are updated the same way.
* **The config** (``Env``, ``User``, ``Cmd`` …), conservatively: a value the
  app set itself always wins. A value that is *identical* to the old base's is
  taken to be inherited and follows the new base, as a rebuild would (e.g.
  ``PYTHON_VERSION``, ``PATH``). ``Env`` and ``Labels`` are merged per
  variable/key, ``ExposedPorts`` and ``Volumes`` per key, the rest
  (``User``, ``WorkingDir``, ``Entrypoint``, ``Cmd``, ``StopSignal``,
  ``Healthcheck``, ``Shell``) as whole values; ``Cmd`` follows only when
  ``Entrypoint`` does too. The one ambiguity: an app that set a variable to
  exactly the old base's value looks inherited, so it follows the new base.
  ``created``, ``os``, ``architecture`` and everything else stay the app's.

What no check can see, and the reason the strategy is opt-in: files that the
app's ``RUN`` steps wrote *from* the old base's contents (a compiled
extension, a copied CA bundle, a package database) stay as they were.

Refused (``RebaseRefused.reason``):

* ``MediaTypeMismatch``: the app, old base and new base are not all OCI or all
  Docker v2 (manifests, configs and layers alike), or an index's types differ.
* ``InconsistentImage``: an image whose non-empty history entries, diff_ids
  and layers do not agree in number, or that is malformed.
* ``BaseLayersMismatch``: the app does not start with the old base's layers
  (same digests **and** diff_ids): it was not built on the recorded base.
* ``HistoryMismatch``: the app's history does not start with the old base's.
* ``PlatformMismatch``: os/architecture/variant differ, or a platform is missing.
* ``IndexMismatch``: an app index, but a base is a single image (or the
  reverse); both bases must be indexes carrying every platform of the app.
* ``UnsupportedLayer``: a layer that cannot be verified or carried (zstd,
  foreign or non-distributable layers).
* ``LayerContentMismatch``: a blob whose bytes do not hash to its digest, size
  or (uncompressed) diff_id.

The adapter adds ``OldBaseNotFound``, ``NewBaseNotFound``, ``BaseUnknown``
and ``TagMoved``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core.images import InvalidImageReference, is_digest, parse_image
from imagepatch.core.oci import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_V2,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from imagepatch.core.reasons import (
    BASE_LAYERS_MISMATCH,
    HISTORY_MISMATCH,
    INCONSISTENT_IMAGE,
    INDEX_MISMATCH,
    LAYER_CONTENT_MISMATCH,
    MEDIA_TYPE_MISMATCH,
    PLATFORM_MISMATCH,
    UNSUPPORTED_LAYER,
)

__all__ = [
    "Image",
    "Layer",
    "LayerDigester",
    "PlatformPlan",
    "RebaseRefused",
    "RebasedImage",
    "RebasedIndex",
    "check_image",
    "index_platforms",
    "is_index",
    "plan_index",
    "platform_of",
    "rebase_image",
    "rebase_index",
    "repin",
    "select_platform",
]

# Layer media types this module can verify (diff_id from the bytes) and carry.
# zstd needs a decompressor the standard library lacks before Python 3.14;
# foreign and non-distributable layers may not be in the registry at all.
_LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
}
# (manifest type, config type, layer media type prefix) of the two families.
_FAMILY = {
    OCI_MANIFEST: ("OCI", OCI_CONFIG, "application/vnd.oci.image.layer."),
    DOCKER_V2: ("Docker v2", DOCKER_CONFIG, "application/vnd.docker.image.rootfs."),
}
_INDEX_FAMILY = {OCI_INDEX: "OCI", DOCKER_LIST: "Docker v2"}

# Config fields that a Dockerfile build inherits from its base as whole values.
_WHOLE_FIELDS = ("User", "WorkingDir", "Entrypoint", "StopSignal", "Healthcheck", "Shell")
_KEYED_FIELDS = ("Labels", "ExposedPorts", "Volumes")


class RebaseRefused(Exception):
    """The rebase is unsafe or impossible; ``reason`` is CamelCase, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Image:
    """One single-platform image as read from a registry.

    ``what`` names it in messages (``app``, ``old base``, ``new base``).
    """

    digest: str
    media_type: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    what: str = "image"


@dataclass(frozen=True)
class Layer:
    """A layer of the result: its descriptor, its diff_id, and where it came from."""

    descriptor: Mapping[str, Any]
    diff_id: str
    from_base: bool

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])


@dataclass(frozen=True)
class RebasedImage:
    """The rebased image: exact bytes to push, and what to check before pushing."""

    platform: str
    media_type: str
    manifest_bytes: bytes
    digest: str
    config_bytes: bytes
    config_digest: str
    layers: tuple[Layer, ...]
    notes: tuple[str, ...]  # config values that followed the new base

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(self.manifest_bytes)
        return manifest

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.config_bytes)
        return config


@dataclass(frozen=True)
class RebasedIndex:
    media_type: str
    body: bytes
    digest: str
    dropped: tuple[str, ...]  # digests of entries left out (attestations of the old image)


@dataclass(frozen=True)
class PlatformPlan:
    """One platform of an index rebase: which three manifests go together."""

    platform: str
    app_digest: str
    old_base_digest: str
    new_base_digest: str


# -- small helpers --------------------------------------------------------------------


def _serialize(doc: Mapping[str, Any]) -> bytes:
    # Deterministic for the same input (insertion order kept), so a rebase of
    # the same images always gives the same digest.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _short(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest[:16]


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def _platform_key(os_: str, arch: str, variant: str | None) -> str:
    # arm64's variant is v8 whether or not an image says so.
    if arch == "arm64" and variant == "v8":
        variant = None
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def platform_of(config: Mapping[str, Any]) -> str:
    """``os/architecture[/variant]`` of an image config."""
    return _platform_key(
        str(config.get("os") or ""),
        str(config.get("architecture") or ""),
        config.get("variant") or None,
    )


def _is_attestation(entry: Mapping[str, Any]) -> bool:
    platform = entry.get("platform") or {}
    annotations = entry.get("annotations") or {}
    return (
        annotations.get("vnd.docker.reference.type") == "attestation-manifest"
        or platform.get("os") == "unknown"
        or platform.get("architecture") == "unknown"
    )


def index_platforms(index: Mapping[str, Any], *, what: str) -> dict[str, Mapping[str, Any]]:
    """``{platform: descriptor}`` of an index's images; attestations left out.

    Two entries for one platform are refused: which one a runtime pulls is
    not defined, so neither can be rebased safely.
    """
    found: dict[str, Mapping[str, Any]] = {}
    for entry in index.get("manifests") or []:
        if not isinstance(entry, Mapping) or _is_attestation(entry):
            continue
        platform = entry.get("platform") or {}
        if not platform.get("os") or not platform.get("architecture"):
            raise RebaseRefused(INDEX_MISMATCH, f"{what}: an index entry has no platform")
        key = _platform_key(platform["os"], platform["architecture"], platform.get("variant"))
        if key in found:
            raise RebaseRefused(INDEX_MISMATCH, f"{what}: two index entries for {key}")
        if not is_digest(str(entry.get("digest", ""))):
            raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: the {key} entry has no digest")
        found[key] = entry
    return found


def select_platform(index: Mapping[str, Any], platform: str, *, what: str) -> str:
    """The digest of ``index``'s manifest for ``platform``, or ``PlatformMismatch``."""
    entries = index_platforms(index, what=what)
    entry = entries.get(platform)
    if entry is None:
        raise RebaseRefused(
            PLATFORM_MISMATCH,
            f"{what} has no {platform} image (it has {', '.join(sorted(entries)) or 'none'})",
        )
    return str(entry["digest"])


def repin(name: str, digest: str) -> str:
    """``name`` re-pinned to ``digest`` if it was pinned by digest; else unchanged.

    The name keeps the form it was recorded in (no ``docker.io/`` added).
    """
    head, sep, pinned = name.rpartition("@")
    if not sep or not is_digest(pinned) or not is_digest(digest):
        return name
    try:
        parse_image(name)
    except InvalidImageReference:
        return name
    return f"{head}@{digest}"


# -- consistency of one image ----------------------------------------------------------


def _layers(image: Image) -> list[Mapping[str, Any]]:
    layers = image.manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, Mapping) for x in layers):
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{image.what}: manifest has no layer list")
    return layers


def _diff_ids(image: Image) -> list[str]:
    rootfs = image.config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids")
    if rootfs.get("type") != "layers" or not isinstance(diff_ids, list):
        raise RebaseRefused(
            INCONSISTENT_IMAGE, f"{image.what}: config has no rootfs of type 'layers'"
        )
    return [str(d) for d in diff_ids]


def _history(image: Image) -> list[Mapping[str, Any]]:
    history = image.config.get("history")
    if history is None:
        return []
    if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{image.what}: config history is not a list")
    return history


def _non_empty(history: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for h in history if not h.get("empty_layer"))


def check_image(image: Image) -> None:
    """Refuse an image whose parts disagree: the project's consistency check.

    Its manifest is an OCI or Docker v2 image manifest whose config and layer
    media types belong to the same family; every digest is well formed; and
    the manifest's layers, the config's diff_ids and the non-empty history
    entries are equal in number. (The layer *bytes* are checked against their
    digests and diff_ids by ``LayerDigester``.)
    """
    what = image.what
    family = _FAMILY.get(image.media_type)
    if family is None:
        raise RebaseRefused(
            MEDIA_TYPE_MISMATCH, f"{what}: {image.media_type!r} is not an image manifest type"
        )
    name, config_type, layer_prefix = family
    manifest = image.manifest
    declared = manifest.get("mediaType")
    if declared is not None and declared != image.media_type:
        raise RebaseRefused(
            MEDIA_TYPE_MISMATCH,
            f"{what}: manifest says mediaType {declared!r} but was served as {image.media_type!r}",
        )
    if manifest.get("schemaVersion") != 2:
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: schemaVersion is not 2")
    config_desc = manifest.get("config")
    if not isinstance(config_desc, Mapping) or not is_digest(str(config_desc.get("digest", ""))):
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: manifest has no config descriptor")
    if config_desc.get("mediaType") != config_type:
        raise RebaseRefused(
            MEDIA_TYPE_MISMATCH,
            f"{what}: a {name} manifest with a {config_desc.get('mediaType')!r} config",
        )
    layers = _layers(image)
    for i, layer in enumerate(layers):
        media_type = str(layer.get("mediaType", ""))
        if not media_type.startswith(layer_prefix):
            raise RebaseRefused(
                MEDIA_TYPE_MISMATCH,
                f"{what}: layer {i} is {media_type!r} in a {name} manifest",
            )
        if media_type not in _LAYER_COMPRESSION:
            raise RebaseRefused(
                UNSUPPORTED_LAYER,
                f"{what}: layer {i} is {media_type!r}, which cannot be verified or carried "
                "(supported: uncompressed and gzip tar layers)",
            )
        if layer.get("urls"):
            raise RebaseRefused(UNSUPPORTED_LAYER, f"{what}: layer {i} is a foreign layer (urls)")
        if not is_digest(str(layer.get("digest", ""))) or not isinstance(layer.get("size"), int):
            raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: layer {i} has no digest or size")
    diff_ids = _diff_ids(image)
    if not all(is_digest(d) for d in diff_ids):
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: a diff_id is not a digest")
    if len(diff_ids) != len(layers):
        raise RebaseRefused(
            INCONSISTENT_IMAGE,
            f"{what}: {len(layers)} layers but {len(diff_ids)} diff_ids",
        )
    non_empty = _non_empty(_history(image))
    if non_empty != len(layers):
        raise RebaseRefused(
            INCONSISTENT_IMAGE,
            f"{what}: {non_empty} non-empty history entries for {len(layers)} layers",
        )


# -- the config ------------------------------------------------------------------------


def _env_map(env: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in env or []:
        name, _, value = str(item).partition("=")
        result[name] = value
    return result


def _merge_env(app: Any, old: Any, new: Any, notes: list[str]) -> list[str] | None:
    """A rebuild's Env: the new base's, then the app's own settings over it.

    A variable is the app's own when the old base did not have it, or had
    another value; otherwise it was inherited and follows the new base
    (changed, or gone if the new base dropped it).
    """
    if app is None and new is None:
        return None
    app_env, old_env, new_env = _env_map(app), _env_map(old), _env_map(new)
    own = {k: v for k, v in app_env.items() if k not in old_env or old_env[k] != v}
    merged: dict[str, str] = {}
    for name, value in new_env.items():
        merged[name] = own.get(name, value)
    for name, value in app_env.items():
        if name in own and name not in merged:
            merged[name] = value
    for name in sorted(set(app_env) | set(merged)):
        before, after = app_env.get(name), merged.get(name)
        if before != after:
            if after is None:
                notes.append(f"Env {name} removed, as in the new base")
            elif before is None:
                notes.append(f"Env {name} added from the new base")
            else:
                notes.append(f"Env {name} follows the new base")
    return [f"{k}={v}" for k, v in merged.items()]


def _merge_keyed(
    field: str, app: Any, old: Any, new: Any, notes: list[str]
) -> dict[str, Any] | None:
    if app is None and new is None:
        return None
    app, old, new = dict(app or {}), dict(old or {}), dict(new or {})
    own = {k: v for k, v in app.items() if k not in old or old[k] != v}
    merged = {k: own.get(k, v) for k, v in new.items()}
    for k, v in app.items():
        if k in own and k not in merged:
            merged[k] = v
    changed = sorted(k for k in set(app) | set(merged) if app.get(k) != merged.get(k))
    if changed:
        notes.append(f"{field} {', '.join(changed)} follow the new base")
    return merged or None


def merge_config(
    app: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The rebased image's ``config`` section, and notes on what followed the new base."""
    notes: list[str] = []
    result = dict(copy.deepcopy(app))

    def put(key: str, value: Any) -> None:
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value

    put("Env", _merge_env(app.get("Env"), old.get("Env"), new.get("Env"), notes))
    for key in _KEYED_FIELDS:
        put(key, _merge_keyed(key, app.get(key), old.get(key), new.get(key), notes))
    inherited: dict[str, bool] = {}
    for key in _WHOLE_FIELDS:
        inherited[key] = app.get(key) == old.get(key)
        if inherited[key] and app.get(key) != new.get(key):
            put(key, copy.deepcopy(new.get(key)))
            notes.append(f"{key} follows the new base")
    # A Dockerfile ENTRYPOINT resets CMD: Cmd is inherited only with Entrypoint.
    if inherited["Entrypoint"] and app.get("Cmd") == old.get("Cmd"):
        if app.get("Cmd") != new.get("Cmd"):
            put("Cmd", copy.deepcopy(new.get("Cmd")))
            notes.append("Cmd follows the new base")
    return result, notes


# -- one image -------------------------------------------------------------------------


def _same_history_entry(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("created_by") == b.get("created_by") and bool(a.get("empty_layer")) == bool(
        b.get("empty_layer")
    )


def _set_base(values: dict[str, Any], *, base_digest: str, base_name: str, force: bool) -> None:
    """Record the new base in annotations or labels (``force``: even if absent)."""
    if force or ANNOTATION_BASE_DIGEST in values:
        values[ANNOTATION_BASE_DIGEST] = base_digest
    if base_name and (force or ANNOTATION_BASE_NAME in values):
        values[ANNOTATION_BASE_NAME] = base_name
    elif ANNOTATION_BASE_NAME in values:
        values[ANNOTATION_BASE_NAME] = repin(str(values[ANNOTATION_BASE_NAME]), base_digest)


def rebase_image(
    app: Image, old_base: Image, new_base: Image, *, base_name: str = ""
) -> RebasedImage:
    """``app`` with ``old_base``'s layers, diff_ids and history replaced by ``new_base``'s.

    ``base_name`` is what to record in ``org.opencontainers.image.base.name``
    (the adapter passes the recorded name, re-pinned if it was pinned); when
    empty, the recorded name is kept and re-pinned here. The new base digest
    recorded is ``new_base.digest``. Raises ``RebaseRefused``.
    """
    for image in (app, old_base, new_base):
        check_image(image)
    if not (app.media_type == old_base.media_type == new_base.media_type):
        raise RebaseRefused(
            MEDIA_TYPE_MISMATCH,
            f"manifest types differ: app {_FAMILY[app.media_type][0]}, old base "
            f"{_FAMILY[old_base.media_type][0]}, new base {_FAMILY[new_base.media_type][0]}; "
            "a rebase would mix layer media types",
        )
    platform = platform_of(app.config)
    for base in (old_base, new_base):
        if platform_of(base.config) != platform:
            raise RebaseRefused(
                PLATFORM_MISMATCH,
                f"the app is {platform} but the {base.what} is {platform_of(base.config)}",
            )

    app_layers, old_layers, new_layers = _layers(app), _layers(old_base), _layers(new_base)
    app_diffs, old_diffs, new_diffs = _diff_ids(app), _diff_ids(old_base), _diff_ids(new_base)
    n = len(old_layers)
    if len(app_layers) < n:
        raise RebaseRefused(
            BASE_LAYERS_MISMATCH,
            f"the app has {len(app_layers)} layers, fewer than the old base's {n}: "
            "it was not built on the recorded base",
        )
    for i in range(n):
        if app_layers[i].get("digest") != old_layers[i].get("digest"):
            raise RebaseRefused(
                BASE_LAYERS_MISMATCH,
                f"app layer {i} is {_short(str(app_layers[i].get('digest')))}, the old base's is "
                f"{_short(str(old_layers[i].get('digest')))}: the app was not built on the "
                f"recorded base {_short(old_base.digest)}",
            )
        if app_diffs[i] != old_diffs[i]:
            raise RebaseRefused(
                BASE_LAYERS_MISMATCH,
                f"app diff_id {i} is {_short(app_diffs[i])}, the old base's is "
                f"{_short(old_diffs[i])}: the app was not built on the recorded base",
            )
    app_history, old_history, new_history = _history(app), _history(old_base), _history(new_base)
    h = len(old_history)
    if len(app_history) < h or not all(
        _same_history_entry(a, b) for a, b in zip(app_history[:h], old_history, strict=True)
    ):
        raise RebaseRefused(
            HISTORY_MISMATCH,
            f"the app's history does not start with the old base's {h} entries",
        )

    # The config.
    app_config = dict(copy.deepcopy(app.config))
    merged, notes = merge_config(
        app.config.get("config") or {},
        old_base.config.get("config") or {},
        new_base.config.get("config") or {},
    )
    name = base_name
    labels = merged.get("Labels")
    if isinstance(labels, dict) and (
        ANNOTATION_BASE_DIGEST in labels or ANNOTATION_BASE_NAME in labels
    ):
        _set_base(labels, base_digest=new_base.digest, base_name=name, force=False)
    if merged or "config" in app_config:
        app_config["config"] = merged
    app_config["rootfs"] = {
        **dict(app.config.get("rootfs") or {}),
        "diff_ids": [*new_diffs, *app_diffs[n:]],
    }
    app_config["history"] = [*copy.deepcopy(new_history), *copy.deepcopy(app_history[h:])]
    config_bytes = _serialize(app_config)
    config_digest = _sha256(config_bytes)

    # The manifest.
    manifest = dict(copy.deepcopy(app.manifest))
    manifest["config"] = {
        **dict(app.manifest["config"]),
        "digest": config_digest,
        "size": len(config_bytes),
    }
    layers = [
        *(Layer(copy.deepcopy(dict(d)), new_diffs[i], True) for i, d in enumerate(new_layers)),
        *(
            Layer(copy.deepcopy(dict(app_layers[i])), app_diffs[i], False)
            for i in range(n, len(app_layers))
        ),
    ]
    manifest["layers"] = [dict(layer.descriptor) for layer in layers]
    annotations = manifest.get("annotations")
    if isinstance(annotations, dict) or app.media_type == OCI_MANIFEST:
        annotations = dict(annotations or {})
        _set_base(annotations, base_digest=new_base.digest, base_name=name, force=True)
        manifest["annotations"] = annotations
    manifest_bytes = _serialize(manifest)
    result = RebasedImage(
        platform=platform,
        media_type=app.media_type,
        manifest_bytes=manifest_bytes,
        digest=_sha256(manifest_bytes),
        config_bytes=config_bytes,
        config_digest=config_digest,
        layers=tuple(layers),
        notes=tuple(notes),
    )
    # The result must pass the same check as its inputs.
    check_image(Image(result.digest, result.media_type, manifest, app_config, what="result"))
    return result


# -- indexes ---------------------------------------------------------------------------


def plan_index(
    app: Mapping[str, Any],
    app_type: str,
    old_base: Mapping[str, Any],
    old_type: str,
    new_base: Mapping[str, Any],
    new_type: str,
) -> list[PlatformPlan]:
    """Which manifests go together, per platform of the app index.

    All three must be indexes of the same family, and both bases must carry
    every platform of the app (they may carry more).
    """
    kinds = {"app": app_type, "old base": old_type, "new base": new_type}
    singles = [what for what, t in kinds.items() if not is_index(t)]
    if singles:
        raise RebaseRefused(
            INDEX_MISMATCH,
            "an index is rebased only onto an index: "
            + ", ".join(f"the {w} is a single image" for w in singles),
        )
    if len({_INDEX_FAMILY[t] for t in kinds.values()}) != 1:
        raise RebaseRefused(
            MEDIA_TYPE_MISMATCH,
            "index types differ: " + ", ".join(f"{w} {_INDEX_FAMILY[t]}" for w, t in kinds.items()),
        )
    app_entries = index_platforms(app, what="app index")
    old_entries = index_platforms(old_base, what="old base index")
    new_entries = index_platforms(new_base, what="new base index")
    if not app_entries:
        raise RebaseRefused(INDEX_MISMATCH, "the app index lists no platform images")
    plans = []
    for platform, entry in app_entries.items():
        for what, entries in (("old base", old_entries), ("new base", new_entries)):
            if platform not in entries:
                raise RebaseRefused(
                    PLATFORM_MISMATCH,
                    f"the app has {platform} but the {what} index does not "
                    f"(it has {', '.join(sorted(entries)) or 'none'})",
                )
        plans.append(
            PlatformPlan(
                platform=platform,
                app_digest=str(entry["digest"]),
                old_base_digest=str(old_entries[platform]["digest"]),
                new_base_digest=str(new_entries[platform]["digest"]),
            )
        )
    return plans


def rebase_index(
    app: Mapping[str, Any],
    media_type: str,
    rebased: Mapping[str, RebasedImage],
    *,
    base_digest: str,
    base_name: str = "",
) -> RebasedIndex:
    """The app index with each platform entry pointing at its rebased image.

    ``rebased`` maps the old platform manifest digest to its result. Entries
    that are not platform images (BuildKit attestations) are dropped: they
    describe the build of the old image, which the new one did not come from.
    Index annotations recording a base are set to ``base_digest`` (the new
    base *index* digest).
    """
    doc = dict(copy.deepcopy(app))
    entries, dropped = [], []
    for entry in app.get("manifests") or []:
        if _is_attestation(entry):
            dropped.append(str(entry.get("digest", "")))
            continue
        result = rebased.get(str(entry.get("digest")))
        if result is None:
            raise RebaseRefused(
                INDEX_MISMATCH, f"index entry {entry.get('digest')} was not rebased"
            )
        entries.append(
            {
                **copy.deepcopy(dict(entry)),
                "mediaType": result.media_type,
                "digest": result.digest,
                "size": len(result.manifest_bytes),
            }
        )
    doc["manifests"] = entries
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and (
        ANNOTATION_BASE_DIGEST in annotations or ANNOTATION_BASE_NAME in annotations
    ):
        _set_base(annotations, base_digest=base_digest, base_name=base_name, force=False)
    body = _serialize(doc)
    return RebasedIndex(
        media_type=media_type, body=body, digest=_sha256(body), dropped=tuple(dropped)
    )


# -- layer bytes -----------------------------------------------------------------------


class LayerDigester:
    """Checks one layer blob as it streams by: its digest, size and diff_id.

    Feed the compressed bytes to ``update``; ``verify`` then raises
    ``LayerContentMismatch`` unless the bytes hash to the descriptor's digest
    and size, and the *uncompressed* tar hashes to ``diff_id``. gzip is
    inflated in bounded steps (a small blob cannot expand into memory), and
    concatenated gzip members are followed, as Go's reader does.
    """

    _STEP = 1 << 20

    def __init__(self, descriptor: Mapping[str, Any], diff_id: str) -> None:
        self.descriptor = descriptor
        self.diff_id = diff_id
        media_type = str(descriptor.get("mediaType", ""))
        compression = _LAYER_COMPRESSION.get(media_type)
        if compression is None:
            raise RebaseRefused(UNSUPPORTED_LAYER, f"layer media type {media_type!r}")
        self._gzip = compression == "gzip"
        digest = str(descriptor.get("digest", ""))
        self._blob = hashlib.new(digest.partition(":")[0] or "sha256")
        self._diff = hashlib.new(diff_id.partition(":")[0] or "sha256")
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self.size = 0
        self._error = ""

    def update(self, chunk: bytes) -> None:
        self._blob.update(chunk)
        self.size += len(chunk)
        if self._error:
            return
        if self._inflate is None:
            self._diff.update(chunk)
            return
        try:
            self._feed(chunk)
        except zlib.error as exc:
            self._error = f"not valid gzip: {exc}"

    def _feed(self, data: bytes) -> None:
        z = self._inflate
        assert z is not None
        while True:
            out = z.decompress(data, self._STEP)
            self._diff.update(out)
            if z.eof:
                data = z.unused_data
                if not data:
                    return
                z = self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            data = z.unconsumed_tail
            if not data and len(out) < self._STEP:
                return

    def verify(self) -> None:
        what = f"layer {_short(str(self.descriptor.get('digest')))}"
        blob = f"{self._blob.name}:{self._blob.hexdigest()}"
        if blob != self.descriptor.get("digest"):
            raise RebaseRefused(
                LAYER_CONTENT_MISMATCH, f"{what}: the blob hashes to {_short(blob)}"
            )
        if self.size != self.descriptor.get("size"):
            raise RebaseRefused(
                LAYER_CONTENT_MISMATCH,
                f"{what}: {self.size} bytes, the descriptor says {self.descriptor.get('size')}",
            )
        if self._inflate is not None and not self._error:
            try:
                self._diff.update(self._inflate.flush())
            except zlib.error as exc:
                self._error = f"not valid gzip: {exc}"
            if not self._error and not self._inflate.eof:
                self._error = "the gzip stream is truncated"
        if self._error:
            raise RebaseRefused(LAYER_CONTENT_MISMATCH, f"{what}: {self._error}")
        diff = f"{self._diff.name}:{self._diff.hexdigest()}"
        if diff != self.diff_id:
            raise RebaseRefused(
                LAYER_CONTENT_MISMATCH,
                f"{what}: the uncompressed layer hashes to {_short(diff)}, but its diff_id is "
                f"{_short(self.diff_id)}",
            )
