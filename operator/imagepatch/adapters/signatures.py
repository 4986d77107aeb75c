"""Cosign signatures in the registry: read and verify them, or sign and push one.

``core.signatures`` knows the formats and decides; this module does the I/O:

* **keys**: a policy's ``KeyRef`` is a Secret in the operator's namespace
  (the only namespace whose Secrets its RBAC can read, so a tenant cannot
  plant a key) or an AWS KMS key, whose public key is read with
  ``kms:GetPublicKey`` and which signs with ``kms:Sign``; the private key
  never leaves KMS. Key material is never logged or put in a message.
* **reads** (``SignatureVerifier.check``): the ``sha256-<hex>.sig`` tag, the
  OCI 1.1 referrers of the digest (the referrers API, else its fallback tag
  ``sha256-<hex>``), and each signature's payload blob, all through the
  patch's policy's view of the registry client (its credentials only).
* **writes** (``Signer.sign_and_push``): the rebase strategy's own
  signature, appended to the ``.sig`` manifest as cosign does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import boto3
from cryptography.hazmat.primitives.asymmetric import ec

from imagepatch.adapters.aws import classified, client_config
from imagepatch.adapters.errors import ConfigurationError, NotFoundError
from imagepatch.adapters.registry import RegistryClient
from imagepatch.core import provenance, signatures
from imagepatch.core.images import ImageRef
from imagepatch.core.reasons import SIGNING_FAILED
from imagepatch.model.policy import KeyRef, ProvenanceRequirement, SignatureRequirement

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 16 * 1024  # a PEM key is well under 1 KiB


class SecretReader(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class Kms:
    """The KMS calls a key needs: GetPublicKey and Sign (one lazy client per region)."""

    def __init__(self, *, endpoint_url: str | None = None) -> None:
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, arn: str) -> Any:
        region = arn.split(":")[3]
        with self._lock:
            if region not in self._clients:
                with classified("kms:CreateClient", arn, region):
                    self._clients[region] = boto3.Session().client(
                        "kms", region_name=region, endpoint_url=self._endpoint_url,
                        config=client_config(3),
                    )  # fmt: skip
            return self._clients[region]

    async def public_key(self, arn: str) -> bytes:
        """The DER SubjectPublicKeyInfo of ``arn``."""

        def call() -> bytes:
            client = self._client(arn)
            with classified("kms:GetPublicKey", arn, arn.split(":")[3]):
                return bytes(client.get_public_key(KeyId=arn)["PublicKey"])

        return await asyncio.to_thread(call)

    async def sign(self, arn: str, payload: bytes) -> str:
        """``arn``'s base64 DER ECDSA-SHA256 signature of ``payload``."""

        def call() -> str:
            client = self._client(arn)
            with classified("kms:Sign", arn, arn.split(":")[3]):
                # RAW: KMS hashes the payload itself (a simple-signing payload is
                # a few hundred bytes, well under RAW's 4 KiB).
                answer = client.sign(
                    KeyId=arn, Message=payload, MessageType="RAW",
                    SigningAlgorithm="ECDSA_SHA_256",
                )  # fmt: skip
            return base64.b64encode(bytes(answer["Signature"])).decode()

        return await asyncio.to_thread(call)


async def _secret_bytes(kube: SecretReader, namespace: str, key: KeyRef) -> bytes:
    """The Secret data ``key`` names; ValueError saying what is wrong (never the data)."""
    secret = await kube.get_secret(namespace, key.secret_name)
    if secret is None:
        raise ValueError(f"Secret {namespace}/{key.secret_name} not found")
    raw = (secret.get("data") or {}).get(key.secret_key)
    if not isinstance(raw, str):
        raise ValueError(f"Secret {namespace}/{key.secret_name} has no {key.secret_key!r} key")
    if len(raw) > MAX_KEY_BYTES * 2:
        raise ValueError(f"Secret {namespace}/{key.secret_name} {key.secret_key!r} is too large")
    return base64.b64decode(raw)


class SignatureVerifier:
    """Looks for a valid signature of a digest by the keys a policy names."""

    def __init__(self, kube: SecretReader, namespace: str, kms: Kms | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._kms = kms or Kms()

    async def _public_key(self, key: KeyRef) -> ec.EllipticCurvePublicKey | str:
        """The key, or why it cannot be used (a transient error propagates)."""
        try:
            if key.kms_key:
                return signatures.load_public_key(await self._kms.public_key(key.kms_key))
            return signatures.load_public_key(
                await _secret_bytes(self._kube, self._namespace, key)
            )
        except ConfigurationError as exc:  # KMS refused (access, no such key)
            return f"{exc.reason}: {exc}"
        except (signatures.KeyProblem, ValueError) as exc:
            return str(exc)

    async def check(
        self,
        registry: RegistryClient,
        repository: ImageRef,
        digest: str,
        requirement: SignatureRequirement,
    ) -> signatures.SignatureCheck:
        """The signature check of ``repository@digest``; raises an adapter error when the
        registry or KMS could not answer this time (the caller verifies again later)."""
        keys = {key.describe(): await self._public_key(key) for key in requirement.keys}
        entries: list[signatures.SignatureEntry] = []
        if any(not isinstance(k, str) for k in keys.values()):
            entries = await signature_entries(registry, repository, digest)
        payloads: dict[str, bytes] = {}
        for entry in entries:
            if entry.payload_digest in payloads:
                continue
            try:
                payloads[entry.payload_digest] = await registry.get_blob(
                    repository, entry.payload_digest, max_bytes=signatures.MAX_PAYLOAD_BYTES
                )
            except (NotFoundError, ConfigurationError) as exc:
                log.info("signature payload %s unreadable: %s", entry.payload_digest, exc)
        return signatures.check(
            digest=digest,
            repository=repository.name,
            entries=entries,
            payloads=payloads,
            keys=keys,
            keyless=len(requirement.keyless),
        )


    async def check_provenance(
        self,
        registry: RegistryClient,
        repository: ImageRef,
        digest: str,
        requirement: ProvenanceRequirement,
        keys: tuple[KeyRef, ...],
    ) -> provenance.ProvenanceCheck:
        """The provenance check of ``repository@digest``: a SLSA attestation signed by
        one of ``keys`` (the policy's signature keys), by a builder the policy accepts."""
        loaded = {key.describe(): await self._public_key(key) for key in keys}
        envelopes: list[bytes] = []
        try:
            att = await registry.get_manifest(repository, provenance.attestation_tag(digest))
            layers = provenance.envelope_layers(att.json())
        except NotFoundError:
            layers = []
        for layer in layers:
            try:
                envelopes.append(await registry.get_blob(
                    repository, layer, max_bytes=provenance.MAX_ENVELOPE_BYTES))
            except (NotFoundError, ConfigurationError) as exc:
                log.info("attestation %s unreadable: %s", layer, exc)
        return provenance.check(
            digest=digest, envelopes=envelopes, keys=loaded,
            builder_pattern=requirement.builder_id_regexp,
        )  # fmt: skip


async def signature_entries(
    registry: RegistryClient, repository: ImageRef, digest: str
) -> list[signatures.SignatureEntry]:
    """Every cosign signature layer of ``digest``: its ``.sig`` tag, then its referrers."""
    entries: list[signatures.SignatureEntry] = []
    try:
        sig = await registry.get_manifest(repository, signatures.signature_tag(digest))
        entries += signatures.entries_of(sig.json(), source="tag")
    except NotFoundError:
        pass
    index = await registry.referrers(repository, digest)
    if index is None:  # no referrers API: the referrers tag schema
        try:
            fallback = await registry.get_manifest(repository, signatures.referrers_tag(digest))
            index = fallback.json()
        except NotFoundError:
            index = {}
    for referrer in signatures.signature_referrers(index):
        try:
            manifest = await registry.get_manifest(repository, referrer)
        except NotFoundError:
            continue
        doc = manifest.json()
        if (doc.get("subject") or {}).get("digest") != digest:
            continue  # a referrer must say what it refers to
        entries += signatures.entries_of(doc, source="referrers")
    return entries[: signatures.MAX_SIGNATURES]


class Signer:
    """Signs an image the operator pushed itself (the rebase strategy), as cosign would."""

    def __init__(self, kube: SecretReader, namespace: str, kms: Kms | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._kms = kms or Kms()

    async def _sign(self, key: KeyRef, payload: bytes) -> str:
        if key.kms_key:
            return await self._kms.sign(key.kms_key, payload)
        try:
            private = signatures.load_private_key(
                await _secret_bytes(self._kube, self._namespace, key)
            )
        except (signatures.KeyProblem, ValueError) as exc:
            raise ConfigurationError(
                f"signing key {key.describe()}: {exc}", reason=SIGNING_FAILED
            ) from None
        return signatures.sign(private, payload)

    async def sign_and_push(
        self, registry: RegistryClient, repository: ImageRef, digest: str, key: KeyRef
    ) -> str:
        """Sign ``repository@digest`` with ``key`` and push the ``.sig`` manifest; its digest.

        Idempotent: a ``.sig`` manifest that already holds a signature of this
        payload verifying with this key is left as it is (ECDSA signatures
        differ on each signing, so the check is by verification, not bytes).
        """
        payload = signatures.simple_signing_payload(digest, repository.name)
        tag = signatures.signature_tag(digest)
        existing: Mapping[str, Any] | None = None
        try:
            existing = (await registry.get_manifest(repository, tag)).json()
        except NotFoundError:
            existing = None
        if existing is not None and await self._already_signed(registry, repository, existing,
                                                              payload, key):  # fmt: skip
            return tag
        signature = await self._sign(key, payload)
        manifest, config = signatures.signature_manifest(
            existing, payload=payload, signature=signature
        )
        await registry.push_blob(repository, payload)
        await registry.push_blob(repository, config)
        pushed = await registry.put_manifest(repository, tag, manifest, signatures.OCI_MANIFEST)
        log.info("signed %s@%s with %s: %s", repository.name, digest, key.describe(), tag)
        return pushed

    async def _already_signed(
        self,
        registry: RegistryClient,
        repository: ImageRef,
        existing: Mapping[str, Any],
        payload: bytes,
        key: KeyRef,
    ) -> bool:
        public: ec.EllipticCurvePublicKey
        if key.kms_key:
            public = signatures.load_public_key(await self._kms.public_key(key.kms_key))
        else:
            try:
                public = signatures.load_private_key(
                    await _secret_bytes(self._kube, self._namespace, key)
                ).public_key()
            except (signatures.KeyProblem, ValueError):
                return False
        for entry in signatures.entries_of(existing, source="tag"):
            if entry.payload_digest != "sha256:" + hashlib.sha256(payload).hexdigest():
                continue
            if signatures.verifies(public, payload, entry.signature):
                return True
        return False
