"""Cosign signatures of an image, as pure decisions: where they are, what they say, do they verify.

A policy with ``spec.verification.signatures`` rolls a rebuilt digest out
only when the registry holds a valid signature of that digest by one of the
policy's keys. This module knows cosign's formats; the registry reads and the
key material are ``adapters/signatures.py``'s.

Where cosign stores a signature of ``repo@sha256:<hex>`` (both are read):

* the **tag scheme**: an OCI manifest tagged ``sha256-<hex>.sig`` in the same
  repository, one layer per signature;
* the **OCI 1.1 referrers** of the digest (``cosign sign
  --registry-referrers-mode=oci-1-1``): manifests whose ``subject`` is the
  digest and whose ``artifactType`` is ``application/vnd.dev.cosign.artifact.sig.v1+json``,
  listed by ``GET /v2/<repo>/referrers/<digest>`` or, on a registry without
  that API, by the index tagged ``sha256-<hex>`` (the distribution spec's
  referrers tag schema, which cosign's library maintains then).

Each signature layer is a *simple signing* payload
(``application/vnd.dev.cosign.simplesigning.v1+json``) whose
``dev.cosignproject.cosign/signature`` annotation is the base64 ECDSA
signature of the payload's exact bytes. The payload must name the digest
(``critical.image.docker-manifest-digest``) and the repository
(``critical.identity.docker-reference``): a valid signature of another
image, or of this digest in another repository, copied here, does not count.

Keys are ECDSA P-256 with SHA-256, as ``cosign generate-key-pair`` and AWS
KMS ``ECC_NIST_P256`` make them. Keyless (Fulcio) signatures are not verified
(there is no trust root offline): a policy that names only keyless identities
fails closed (``Unverifiable``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imagepatch.core.images import InvalidImageReference, is_digest, parse_image

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

MAX_PAYLOAD_BYTES = 64 * 1024  # a simple-signing payload is a few hundred bytes
MAX_SIGNATURES = 32  # signature layers (and referrer manifests) looked at, per digest
MAX_SIGNATURE_CHARS = 1024  # base64 of a DER ECDSA signature is under 200

VERIFIED = "Verified"
MISSING = "Missing"
INVALID = "Invalid"
UNVERIFIABLE = "Unverifiable"


class KeyProblem(ValueError):
    """A key that cannot be used: not PEM, not an EC P-256 key."""


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    return referrers_tag(digest) + ".sig"


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's fallback tag of ``digest``: ``sha256-<hex>``."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One signature found in the registry: its payload blob and base64 signature."""

    payload_digest: str
    payload_size: int
    signature: str
    source: str  # "tag" or "referrers"


def entries_of(manifest: Mapping[str, Any], *, source: str) -> list[SignatureEntry]:
    """The simple-signing layers of a signature manifest (malformed ones are left out)."""
    out = []
    for layer in (manifest.get("layers") or [])[:MAX_SIGNATURES]:
        if not isinstance(layer, Mapping) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        digest, size = layer.get("digest"), layer.get("size")
        signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not (isinstance(digest, str) and is_digest(digest) and isinstance(size, int)):
            continue
        if not isinstance(signature, str) or not signature:
            continue
        if 0 <= size <= MAX_PAYLOAD_BYTES and len(signature) <= MAX_SIGNATURE_CHARS:
            out.append(SignatureEntry(digest, size, signature, source))
    return out


def signature_referrers(index: Mapping[str, Any]) -> list[str]:
    """The digests of the cosign signature manifests a referrers index lists."""
    out = []
    for entry in (index.get("manifests") or [])[:MAX_SIGNATURES]:
        if not isinstance(entry, Mapping) or entry.get("artifactType") != SIGNATURE_ARTIFACT:
            continue
        digest = entry.get("digest")
        if isinstance(digest, str) and is_digest(digest):
            out.append(digest)
    return out


def simple_signing_payload(digest: str, repository: str) -> bytes:
    """The payload cosign signs for ``repository@digest`` (same fields, same order)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def payload_problem(payload: bytes, *, digest: str, repository: str) -> str:
    """Why a signed payload is not a signature of ``repository@digest``, or ''."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return "its payload is not JSON"
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        return "its payload has no critical section"
    if critical.get("type") != PAYLOAD_TYPE:
        return f"its payload type is {str(critical.get('type'))[:64]!r}, not {PAYLOAD_TYPE!r}"
    signed = (critical.get("image") or {}).get("docker-manifest-digest")
    if signed != digest:
        return f"it signs {str(signed)[:80]}, not {digest}"
    reference = (critical.get("identity") or {}).get("docker-reference")
    if not isinstance(reference, str) or not same_repository(reference, repository):
        return f"it names the repository {str(reference)[:200]!r}, not {repository!r}"
    return ""


def same_repository(reference: str, repository: str) -> bool:
    """Whether two references name one repository (Docker Hub spellings normalised)."""
    try:
        a, b = parse_image(reference), parse_image(repository)
    except InvalidImageReference:
        return False
    return (a.host, a.repository) == (b.host, b.repository)


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from PEM (cosign's ``cosign.pub``) or DER (KMS GetPublicKey)."""
    try:
        if pem.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(pem)
        else:
            key = serialization.load_der_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyProblem("not an ECDSA P-256 public key (cosign's default)")
    return key


def load_private_key(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 private key from a PKCS#8 (or SEC1) PEM, with or without a password."""
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in pem or b"ENCRYPTED COSIGN PRIVATE KEY" in pem:
        raise KeyProblem(
            "is in cosign's own encrypted format; give a PKCS#8 PEM instead "
            "(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=password or None)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyProblem("not an ECDSA P-256 private key")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """The base64 DER ECDSA-SHA256 signature of ``payload``, as cosign annotates it."""
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def verifies(key: ec.EllipticCurvePublicKey, payload: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64 DER) is ``key``'s ECDSA-SHA256 signature of ``payload``."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureCheck:
    """The outcome of looking for a valid signature of one digest."""

    result: str  # Verified | Missing | Invalid | Unverifiable
    message: str
    key: str = ""  # the key that verified it
    keys_tried: tuple[str, ...] = ()
    source: str = ""  # where the verified signature was: tag | referrers

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "message": self.message}
        if self.key:
            out["key"] = self.key
        if self.keys_tried:
            out["keysTried"] = list(self.keys_tried)
        if self.source:
            out["source"] = self.source
        return out


def check(
    *,
    digest: str,
    repository: str,
    entries: Sequence[SignatureEntry],
    payloads: Mapping[str, bytes],
    keys: Mapping[str, ec.EllipticCurvePublicKey | str],
    keyless: int = 0,
) -> SignatureCheck:
    """Is there a valid signature of ``repository@digest`` by one of ``keys``?

    ``keys`` maps a key's name (``KeyRef.describe``) to the loaded key, or to
    why it could not be loaded. ``payloads`` are the payload blobs read, by
    digest (a blob that could not be read is absent). ``keyless``: how many
    keyless identities the policy names (never verified here).
    """
    tried = tuple(keys)
    usable = {name: k for name, k in keys.items() if not isinstance(k, str)}
    unusable = [f"{name} ({k})" for name, k in keys.items() if isinstance(k, str)]
    keyless_note = (
        f"; {keyless} keyless identit{'y' if keyless == 1 else 'ies'} cannot be verified by "
        "this operator (no Fulcio/Rekor trust root offline)"
        if keyless
        else ""
    )
    unusable_note = f"; unusable key(s): {', '.join(unusable)}" if unusable else ""
    if not usable:
        return SignatureCheck(
            result=UNVERIFIABLE,
            keys_tried=tried,
            message=f"no key can verify a signature of {digest}"
            + (keyless_note or "")
            + unusable_note,
        )
    if not entries:
        return SignatureCheck(
            result=MISSING,
            keys_tried=tried,
            message=f"no cosign signature of {digest} in {repository} (looked for the "
            f"{signature_tag(digest)} tag and the digest's referrers); keys: {', '.join(tried)}"
            + unusable_note,
        )
    problems: list[str] = []
    for entry in entries:
        payload = payloads.get(entry.payload_digest)
        if payload is None:
            problems.append(f"payload {entry.payload_digest} could not be read")
            continue
        matched = [name for name, key in usable.items() if verifies(key, payload, entry.signature)]
        if not matched:
            problems.append(f"a signature ({entry.source}) verifies with none of the keys")
            continue
        problem = payload_problem(payload, digest=digest, repository=repository)
        if problem:
            problems.append(f"a signature by {matched[0]} ({entry.source}) is not valid here: "
                            f"{problem}")  # fmt: skip
            continue
        return SignatureCheck(
            result=VERIFIED,
            key=matched[0],
            keys_tried=tried,
            source=entry.source,
            message=f"signed by {matched[0]} ({entry.source})",
        )
    shown = "; ".join(dict.fromkeys(problems))
    return SignatureCheck(
        result=INVALID,
        keys_tried=tried,
        message=f"{len(entries)} signature(s) of {digest} found, none valid for the key(s) "
        f"{', '.join(tried)}: {shown}" + unusable_note,
    )


def signature_manifest(
    existing: Mapping[str, Any] | None, *, payload: bytes, signature: str
) -> tuple[bytes, bytes]:
    """The ``.sig`` manifest with one more signature layer, and its config blob.

    Layers already there are kept (another signer's signatures stay valid).
    The config lists each layer's digest as its diff_id (the payload is not
    compressed), as cosign's own config does. Returns (manifest, config).
    """
    layer = {
        "mediaType": SIMPLE_SIGNING,
        "size": len(payload),
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "annotations": {SIGNATURE_ANNOTATION: signature},
    }
    layers = [
        dict(old)
        for old in ((existing or {}).get("layers") or [])
        if isinstance(old, Mapping) and isinstance(old.get("digest"), str)
    ]
    layers.append(layer)
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
        "config": {},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "size": len(config_bytes),
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        },
        "layers": layers,
    }
    return json.dumps(manifest, separators=(",", ":")).encode(), config_bytes
