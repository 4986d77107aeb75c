"""Cosign signatures against the real registry, the real cosign v2.6.5 and moto's KMS.

Given images in Debian's registry (distribution 2.8), when a pipeline signs
them with ``cosign sign --key`` (the ``sha256-<hex>.sig`` tag scheme, or an
OCI 1.1 referrer with ``--registry-referrers-mode=oci-1-1``), then the
operator's verifier (``adapters.signatures.SignatureVerifier``, keys from
Secrets or KMS) finds and verifies them, names the keys tried when there is
none or none valid, and the operator's own signatures (``Signer``, as the
rebase strategy makes them, with a PEM key from a Secret or with
``kms:Sign``) are accepted by ``cosign verify --key``.

Distribution 2.8 has no referrers API: ``GET /v2/<repo>/referrers/<digest>``
answers 404, so the referrers path read here is the referrers tag schema's
``sha256-<hex>`` index that cosign's library keeps; the API's own answer is
parsed in tests/unit/test_signatures.py from the spec's documented example.
The Secrets are an in-memory reader (their RBAC and the API server are the
e2e test's part).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imagepatch.adapters.errors import ConfigurationError
from imagepatch.adapters.registry import LOOPBACK_NETWORKS, RegistryClient, RetryPolicy
from imagepatch.adapters.signatures import Kms, SignatureVerifier, Signer
from imagepatch.core import signatures as sig
from imagepatch.core.images import parse_image
from imagepatch.model.policy import KeyRef, SignatureRequirement
from tests.support.cosign import Cosign, KeyPair
from tests.support.images import ImageRef, make_base_image, unique_repo

NAMESPACE = "imagepatch-system"
FAST = RetryPolicy(attempts=2, timeout=30.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)


class Secrets:
    """Secrets of the operator namespace, as the API server returns them."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, str]] = {}

    def put(self, name: str, **data: bytes) -> None:
        self.items[name] = {k.replace("_", "."): base64.b64encode(v).decode() for k, v in data.items()}

    async def get_secret(self, namespace: str, name: str) -> dict | None:
        assert namespace == NAMESPACE
        data = self.items.get(name)
        return None if data is None else {"data": data}


def pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def check(registry, image: ImageRef, secrets: Secrets, *keys: KeyRef, kms: Kms | None = None,
          keyless: int = 0) -> sig.SignatureCheck:
    from imagepatch.model.policy import KeylessIdentity

    requirement = SignatureRequirement(
        keys=keys, keyless=tuple(KeylessIdentity(issuer="i", subject_regexp=".*")
                                 for _ in range(keyless)))
    ref = parse_image(image.repository)

    async def main() -> sig.SignatureCheck:
        async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
            return await SignatureVerifier(secrets, NAMESPACE, kms).check(
                client, ref, image.digest, requirement)
    return asyncio.run(main())


def copy_manifest(registry, src: str, dst: str, ref: str, tag: str | None = None) -> None:
    """Copy ``src:ref`` (its blobs, then its manifest) into ``dst`` under ``tag`` or ``ref``."""
    body, media_type, _ = registry.get_manifest(src, ref)
    doc = json.loads(body)
    for blob in [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]:
        registry.push_blob(dst, registry.get_blob(src, blob))
    registry.put_manifest(dst, tag or ref, body, media_type)


@pytest.fixture
def ci_key(cosign: Cosign) -> KeyPair:
    return cosign.generate_key_pair(unique_repo("ci"))


def test_a_cosign_signature_is_verified_and_unsigned_or_foreign_ones_are_not(
    registry, cosign: Cosign, ci_key: KeyPair
) -> None:
    repo = unique_repo("signed")
    signed = make_base_image(registry, repo, "1", marker="signed")
    unsigned = make_base_image(registry, repo, "2", marker="unsigned")
    foreign = make_base_image(registry, repo, "3", marker="foreign")
    cosign.sign(signed.pinned, ci_key)
    cosign.sign(foreign.pinned, cosign.generate_key_pair(unique_repo("other")))
    secrets = Secrets()
    secrets.put("cosign-ci", cosign_pub=ci_key.public.read_bytes())
    key = KeyRef(secret_name="cosign-ci", secret_key="cosign.pub")

    verified = check(registry, signed, secrets, key)
    assert (verified.result, verified.key, verified.source) == (
        "Verified", "secret:cosign-ci/cosign.pub", "tag")

    missing = check(registry, unsigned, secrets, key)
    assert missing.result == "Missing"
    assert f"no cosign signature of {unsigned.digest}" in missing.message
    assert "secret:cosign-ci/cosign.pub" in missing.message

    invalid = check(registry, foreign, secrets, key)
    assert invalid.result == "Invalid"
    assert "none valid for the key(s) secret:cosign-ci/cosign.pub" in invalid.message
    assert "verifies with none of the keys" in invalid.message

    # A key Secret that is missing, or holds no key, is named; with no usable key: fail closed.
    secrets.put("not-a-key", cosign_pub=b"hello")
    gone = check(registry, signed, secrets, KeyRef(secret_name="gone", secret_key="cosign.pub"),
                 KeyRef(secret_name="not-a-key", secret_key="cosign.pub"), keyless=1)
    assert gone.result == "Unverifiable"
    assert f"Secret {NAMESPACE}/gone not found" in gone.message
    assert "secret:not-a-key/cosign.pub (not a PEM public key" in gone.message
    assert "1 keyless identity cannot be verified" in gone.message
    # The signature of one repository's digest is not valid in another.
    copy_repo = unique_repo("copied")
    copy_manifest(registry, repo, copy_repo, signed.digest, "1")
    copy_manifest(registry, repo, copy_repo, sig.signature_tag(signed.digest))
    copied = check(registry, ImageRef(f"{registry.host}/{copy_repo}", "1", signed.digest), secrets, key)
    assert copied.result == "Invalid"
    assert f"names the repository '{registry.host}/{repo}'" in copied.message


def test_a_referrers_mode_signature_is_found_through_the_referrers_tag_schema(
    registry, cosign: Cosign, ci_key: KeyPair
) -> None:
    repo = unique_repo("referred")
    image = make_base_image(registry, repo, "1", marker="referred")
    cosign.sign(image.pinned, ci_key, referrers=True)
    assert sig.signature_tag(image.digest) not in registry.tags(repo)  # no .sig tag at all
    assert sig.referrers_tag(image.digest) in registry.tags(repo)

    async def api_answer():
        async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
            return await client.referrers(parse_image(image.repository), image.digest)
    assert asyncio.run(api_answer()) is None  # distribution 2.8: no referrers API

    secrets = Secrets()
    secrets.put("cosign-ci", cosign_pub=ci_key.public.read_bytes())
    found = check(registry, image, secrets, KeyRef(secret_name="cosign-ci", secret_key="cosign.pub"))
    assert (found.result, found.source) == ("Verified", "referrers")


def sign_as_the_operator(registry, image: ImageRef, signer: Signer, key: KeyRef) -> str:
    async def main() -> str:
        async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
            return await signer.sign_and_push(client, parse_image(image.repository), image.digest,
                                              key)
    return asyncio.run(main())


def test_the_operators_own_signature_passes_cosign_verify_and_is_made_once(
    registry, cosign: Cosign, tmp_path: Path
) -> None:
    repo = unique_repo("rebased")
    image = make_base_image(registry, repo, "1", marker="rebased")
    private = ec.generate_private_key(ec.SECP256R1())
    secrets = Secrets()
    secrets.put("rebase-signing", cosign_key=pkcs8(private))
    key = KeyRef(secret_name="rebase-signing", secret_key="cosign.key")
    signer = Signer(secrets, NAMESPACE)

    first = sign_as_the_operator(registry, image, signer, key)
    assert sign_as_the_operator(registry, image, signer, key) == sig.signature_tag(image.digest)
    assert registry.head_digest(repo, sig.signature_tag(image.digest)) == first  # not signed twice

    public = tmp_path / "rebase.pub"
    public.write_bytes(sig.public_pem(private))
    verified = cosign.verify(image.pinned, public)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)[0]["critical"]["image"]["docker-manifest-digest"] == image.digest
    # A CI signature added later is kept next to the operator's: both verify.
    ci = cosign.generate_key_pair(unique_repo("ci"))
    cosign.sign(image.pinned, ci)
    assert cosign.verify(image.pinned, public).returncode == 0
    assert cosign.verify(image.pinned, ci.public).returncode == 0
    assert len(json.loads(registry.get_manifest(repo, sig.signature_tag(image.digest))[0])["layers"]) == 2

    # A key that is not a PKCS#8 PEM P-256 key is refused, naming the key.
    secrets.put("cosign-format", cosign_key=ci.private.read_bytes())
    with pytest.raises(ConfigurationError, match="secret:cosign-format/cosign.key: is in cosign's own"):
        sign_as_the_operator(registry, image, signer,
                             KeyRef(secret_name="cosign-format", secret_key="cosign.key"))


def test_kms_keys_sign_and_verify_through_moto(registry, cosign: Cosign, aws, tmp_path: Path,
                                               monkeypatch) -> None:
    for name, value in aws.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    kms_client = aws.client("kms")
    arn = kms_client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    kms = Kms(endpoint_url=aws.endpoint_url)
    repo = unique_repo("kms")
    image = make_base_image(registry, repo, "1", marker="kms")
    key = KeyRef(kms_key=arn)

    assert check(registry, image, Secrets(), key, kms=kms).result == "Missing"
    sign_as_the_operator(registry, image, Signer(Secrets(), NAMESPACE, kms), key)

    found = check(registry, image, Secrets(), key, kms=kms)
    assert (found.result, found.key) == ("Verified", f"kms:{arn}")
    public = tmp_path / "kms.pub"
    public.write_bytes(sig.public_pem(sig.load_public_key(
        kms_client.get_public_key(KeyId=arn)["PublicKey"])))
    assert cosign.verify(image.pinned, public).returncode == 0
    # A key KMS does not know is named with KMS's refusal, and nothing passes.
    gone = f"{arn[: arn.index(':key/')]}:key/00000000-0000-0000-0000-000000000000"
    unknown = check(registry, image, Secrets(), KeyRef(kms_key=gone), kms=kms)
    assert unknown.result == "Unverifiable" and f"kms:{gone}" in unknown.message


def test_a_slsa_provenance_attestation_made_by_cosign_is_checked(
    registry, cosign: Cosign, ci_key: KeyPair
) -> None:
    from imagepatch.model.policy import ProvenanceRequirement

    repo = unique_repo("attested")
    image = make_base_image(registry, repo, "1", marker="attested")
    builder = "https://github.com/org/app/.github/workflows/build.yml@refs/heads/main"
    secrets = Secrets()
    secrets.put("cosign-ci", cosign_pub=ci_key.public.read_bytes())
    keys = (KeyRef(secret_name="cosign-ci", secret_key="cosign.pub"),)

    def attested(pattern: str):
        async def main():
            async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
                return await SignatureVerifier(secrets, NAMESPACE).check_provenance(
                    client, parse_image(image.repository), image.digest,
                    ProvenanceRequirement(builder_id_regexp=pattern), keys)
        return asyncio.run(main())

    assert attested(".*").result == "Missing"
    cosign.attest_provenance(image.pinned, ci_key, builder)
    found = attested(r"https://github\.com/org/.+@refs/heads/main")
    assert (found.result, found.builder_id, found.key) == (
        "Verified", builder, "secret:cosign-ci/cosign.pub")
    other = attested(r"https://github\.com/other-org/.+")
    assert other.result == "Invalid" and f"names builder {builder!r}" in other.message
