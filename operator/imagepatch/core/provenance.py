"""SLSA provenance attestations of an image, as pure decisions (``spec.verification.provenance``).

``cosign attest --type slsaprovenance --key`` stores an in-toto statement in
a DSSE envelope, as a layer (``application/vnd.dsse.envelope.v1+json``) of
the manifest tagged ``sha256-<hex>.att`` in the image's repository. A policy
that asks for provenance rolls a rebuilt digest out only when such an
attestation exists that:

* is signed (DSSE: ECDSA-SHA256 over ``PAE(payloadType, payload)``) by one
  of the policy's signature keys (``spec.verification.signatures.keys``);
* is an in-toto statement whose ``subject`` lists this digest;
* has a SLSA provenance predicate (v0.2: ``predicate.builder.id``; v1:
  ``predicate.runDetails.builder.id``) whose builder id matches the policy's
  ``builderIdRegExp`` (the whole id).

The registry reads are ``adapters/signatures.py``'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from imagepatch.core.images import is_digest
from imagepatch.core.signatures import referrers_tag, verifies

DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
MAX_ENVELOPE_BYTES = 1024 * 1024  # a provenance statement is a few KiB
MAX_ATTESTATIONS = 16

VERIFIED = "Verified"
MISSING = "Missing"
INVALID = "Invalid"


def attestation_tag(digest: str) -> str:
    """cosign's tag for the attestations of ``digest``: ``sha256-<hex>.att``."""
    return referrers_tag(digest) + ".att"


def envelope_layers(manifest: Mapping[str, Any]) -> list[str]:
    """The digests of the DSSE envelope layers of an ``.att`` manifest."""
    out = []
    for layer in (manifest.get("layers") or [])[:MAX_ATTESTATIONS]:
        if not isinstance(layer, Mapping) or layer.get("mediaType") != DSSE_ENVELOPE:
            continue
        digest, size = layer.get("digest"), layer.get("size")
        if isinstance(digest, str) and is_digest(digest) and isinstance(size, int):
            if 0 <= size <= MAX_ENVELOPE_BYTES:
                out.append(digest)
    return out


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signatures sign."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def builder_id(statement: Mapping[str, Any]) -> str:
    """The builder id of a SLSA provenance statement (v0.2 or v1), or ''."""
    predicate = statement.get("predicate")
    if not isinstance(predicate, Mapping):
        return ""
    if statement.get("predicateType") == SLSA_V1:
        run = predicate.get("runDetails")
        builder = run.get("builder") if isinstance(run, Mapping) else None
    else:
        builder = predicate.get("builder")
    value = builder.get("id") if isinstance(builder, Mapping) else None
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvenanceCheck:
    """The outcome of looking for an acceptable provenance attestation of one digest."""

    result: str  # Verified | Missing | Invalid
    message: str
    builder_id: str = ""
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "message": self.message}
        if self.builder_id:
            out["builderId"] = self.builder_id
        if self.key:
            out["key"] = self.key
        return out


def _problem(
    envelope: bytes,
    *,
    digest: str,
    builder_pattern: str,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
) -> tuple[str, str, str]:
    """(problem or '', the signing key's name, the builder id) of one envelope."""
    try:
        doc = json.loads(envelope)
        payload = base64.b64decode(doc["payload"], validate=True)
        payload_type = str(doc["payloadType"])
        sigs = [s["sig"] for s in doc.get("signatures") or [] if isinstance(s, Mapping)]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return "an attestation is not a DSSE envelope", "", ""
    signed = pae(payload_type, payload)
    key = next(
        (name for name, k in keys.items() for s in sigs
         if isinstance(s, str) and verifies(k, signed, s)),
        "",
    )  # fmt: skip
    if not key:
        return "an attestation is signed by none of the keys", "", ""
    if payload_type != IN_TOTO:
        return f"an attestation by {key} is not an in-toto statement", key, ""
    try:
        statement = json.loads(payload)
    except ValueError:
        return f"an attestation by {key} is not JSON", key, ""
    if not isinstance(statement, Mapping) or statement.get("predicateType") not in (
        SLSA_V02,
        SLSA_V1,
    ):
        return f"an attestation by {key} is not SLSA provenance", key, ""
    hexpart = digest.partition(":")[2]
    subjects = statement.get("subject") or []
    if not any(
        isinstance(s, Mapping) and (s.get("digest") or {}).get("sha256") == hexpart
        for s in subjects
    ):
        return f"the provenance by {key} is not about {digest}", key, ""
    found = builder_id(statement)
    if not re.fullmatch(builder_pattern, found):
        return (
            f"the provenance by {key} names builder {found[:200]!r}, which does not match "
            f"{builder_pattern!r}",
            key,
            found,
        )
    return "", key, found


def check(
    *,
    digest: str,
    envelopes: Sequence[bytes],
    builder_pattern: str,
    keys: Mapping[str, ec.EllipticCurvePublicKey | str],
) -> ProvenanceCheck:
    """Is there a signed SLSA provenance of ``digest`` by an accepted builder?"""
    usable = {name: k for name, k in keys.items() if not isinstance(k, str)}
    if not envelopes:
        return ProvenanceCheck(
            result=MISSING,
            message=f"no provenance attestation of {digest} (looked for the "
            f"{attestation_tag(digest)} tag)",
        )
    problems = []
    for envelope in envelopes:
        problem, key, found = _problem(
            envelope, digest=digest, builder_pattern=builder_pattern, keys=usable
        )
        if not problem:
            return ProvenanceCheck(
                result=VERIFIED,
                builder_id=found,
                key=key,
                message=f"SLSA provenance by {key}: built by {found}",
            )
        problems.append(problem)
    return ProvenanceCheck(
        result=INVALID,
        message=f"{len(envelopes)} attestation(s) of {digest}, none acceptable: "
        + "; ".join(dict.fromkeys(problems)),
    )
