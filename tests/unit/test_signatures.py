"""Cosign signatures as pure decisions (core.signatures) and their place in verification.

The formats checked here are the ones cosign v2.6.5 writes (read from its
output in tests/integration/test_signatures.py); the referrers index is the
example response of the OCI distribution spec's "Listing Referrers" section.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from imagepatch.core import reasons
from imagepatch.core import rebuild as rebuilds
from imagepatch.core import signatures as sig
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import KeyRef, parse_policy_spec
from imagepatch.model.rebuild_status import RebuildStatus, VerificationStatus

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REPO = "registry.example:5000/team/app"
SELECTOR = {"namespaceSelector": {}}


def keypair() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, private.public_key()


def entry(payload: bytes, signature: str, source: str = "tag") -> sig.SignatureEntry:
    return sig.SignatureEntry("sha256:" + hashlib.sha256(payload).hexdigest(), len(payload),
                              signature, source)


# -- where signatures are ----------------------------------------------------------------


def test_cosign_tags_of_a_digest() -> None:
    assert sig.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    assert sig.referrers_tag(DIGEST) == "sha256-" + "ab" * 32


def test_signature_layers_of_a_sig_manifest_as_cosign_writes_it() -> None:
    manifest = {
        "schemaVersion": 2, "mediaType": sig.OCI_MANIFEST,
        "config": {"mediaType": sig.OCI_CONFIG, "size": 233, "digest": OTHER},
        "layers": [
            {"mediaType": sig.SIMPLE_SIGNING, "size": 235, "digest": DIGEST,
             "annotations": {sig.SIGNATURE_ANNOTATION: "MEUCIQ=="}},
            {"mediaType": "application/octet-stream", "size": 1, "digest": DIGEST},  # not a signature
            {"mediaType": sig.SIMPLE_SIGNING, "size": 235, "digest": DIGEST},  # no signature
            {"mediaType": sig.SIMPLE_SIGNING, "size": 235, "digest": "sha256:short",
             "annotations": {sig.SIGNATURE_ANNOTATION: "x"}},
            {"mediaType": sig.SIMPLE_SIGNING, "size": 10**9, "digest": DIGEST,  # too big a payload
             "annotations": {sig.SIGNATURE_ANNOTATION: "x"}},
            "not a descriptor",
        ],
    }
    assert sig.entries_of(manifest, source="tag") == [
        sig.SignatureEntry(DIGEST, 235, "MEUCIQ==", "tag")]
    assert sig.entries_of({}, source="tag") == []


def test_signature_referrers_from_the_spec_example_response() -> None:
    # The OCI distribution spec's example answer to GET /v2/<name>/referrers/<digest>,
    # with the second entry's artifactType the one cosign gives its signatures.
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1234,
             "digest": "sha256:" + "a1" * 32, "artifactType": "application/vnd.example.sbom.v1",
             "annotations": {"org.opencontainers.image.created": "2022-01-01T14:42:55Z",
                             "org.example.sbom.format": "json"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1234,
             "digest": "sha256:" + "a2" * 32, "artifactType": sig.SIGNATURE_ARTIFACT,
             "annotations": {"org.opencontainers.image.created": "2022-01-01T07:21:33Z"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
             "digest": "not-a-digest", "artifactType": sig.SIGNATURE_ARTIFACT},
            "junk",
        ],
    }
    assert sig.signature_referrers(index) == ["sha256:" + "a2" * 32]
    assert sig.signature_referrers({}) == []


# -- what a payload says ----------------------------------------------------------------


def test_the_payload_is_cosigns_simple_signing_document() -> None:
    payload = sig.simple_signing_payload(DIGEST, REPO)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"' + REPO.encode() + b'"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    assert sig.payload_problem(payload, digest=DIGEST, repository=REPO) == ""


@pytest.mark.parametrize(("payload", "problem"), [
    (b"not json", "not JSON"),
    (b"[]", "no critical section"),
    (b'{"critical": {"type": "something else"}}', "payload type is 'something else'"),
    (sig.simple_signing_payload(OTHER, REPO), f"it signs {OTHER}, not {DIGEST}"),
    (sig.simple_signing_payload(DIGEST, "registry.example:5000/team/other"),
     "names the repository 'registry.example:5000/team/other'"),
    (sig.simple_signing_payload(DIGEST, "Not A Reference!"), "names the repository"),
])
def test_a_payload_of_another_digest_or_repository_is_refused(payload: bytes, problem: str) -> None:
    assert problem in sig.payload_problem(payload, digest=DIGEST, repository=REPO)


def test_docker_hub_spellings_name_one_repository() -> None:
    assert sig.same_repository("index.docker.io/library/nginx", "docker.io/library/nginx")
    assert sig.same_repository("nginx", "docker.io/library/nginx")
    assert not sig.same_repository("docker.io/library/nginx", "docker.io/team/nginx")


# -- keys --------------------------------------------------------------------------------


def test_keys_load_from_pem_and_der_and_other_kinds_are_refused() -> None:
    private, public = keypair()
    pem = sig.public_pem(private)
    assert sig.public_pem(public) == pem
    assert isinstance(sig.load_public_key(pem), ec.EllipticCurvePublicKey)
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    assert isinstance(sig.load_public_key(der), ec.EllipticCurvePublicKey)  # KMS GetPublicKey
    with pytest.raises(sig.KeyProblem, match="not a PEM public key"):
        sig.load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(sig.KeyProblem, match="not an ECDSA P-256 public key"):
        sig.load_public_key(sig.public_pem(p384))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(sig.KeyProblem, match="not an ECDSA P-256 public key"):
        sig.load_public_key(rsa_pem)


def test_private_keys_are_pkcs8_pem_with_or_without_a_password() -> None:
    private, _ = keypair()
    plain = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    assert sig.load_private_key(plain).private_numbers() == private.private_numbers()
    locked = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"pw"))
    assert sig.load_private_key(locked, b"pw").private_numbers() == private.private_numbers()
    with pytest.raises(sig.KeyProblem, match="not a usable PEM private key"):
        sig.load_private_key(locked)
    cosign_format = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJr\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    with pytest.raises(sig.KeyProblem, match="cosign's own encrypted format"):
        sig.load_private_key(cosign_format)
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(sig.KeyProblem, match="not an ECDSA P-256 private key"):
        sig.load_private_key(p384)


def test_a_signature_verifies_only_with_its_key_and_payload() -> None:
    private, public = keypair()
    _, stranger = keypair()
    signature = sig.sign(private, b"payload")
    assert sig.verifies(public, b"payload", signature)
    assert not sig.verifies(public, b"payload!", signature)
    assert not sig.verifies(stranger, b"payload", signature)
    assert not sig.verifies(public, b"payload", "not base64!")
    assert not sig.verifies(public, b"payload", "AAAA")


# -- the check ---------------------------------------------------------------------------


def test_a_signature_by_a_policy_key_of_this_digest_and_repository_is_verified() -> None:
    private, public = keypair()
    _, other = keypair()
    payload = sig.simple_signing_payload(DIGEST, REPO)
    found = sig.check(
        digest=DIGEST, repository=REPO, entries=[entry(payload, sig.sign(private, payload),
                                                       "referrers")],
        payloads={entry(payload, "").payload_digest: payload},
        keys={"secret:other/cosign.pub": other, "secret:ci/cosign.pub": public},
    )
    assert found.result == sig.VERIFIED
    assert found.key == "secret:ci/cosign.pub" and found.source == "referrers"
    assert found.to_dict() == {
        "result": "Verified", "message": "signed by secret:ci/cosign.pub (referrers)",
        "key": "secret:ci/cosign.pub",
        "keysTried": ["secret:other/cosign.pub", "secret:ci/cosign.pub"], "source": "referrers"}


def test_no_signature_is_missing_and_names_the_keys() -> None:
    _, public = keypair()
    found = sig.check(digest=DIGEST, repository=REPO, entries=[], payloads={},
                      keys={"kms:arn:aws:kms:us-east-1:123456789012:key/k": public,
                            "secret:gone/cosign.pub": "Secret imagepatch-system/gone not found"})
    assert found.result == sig.MISSING
    assert "no cosign signature of " + DIGEST in found.message
    assert "kms:arn:aws:kms:us-east-1:123456789012:key/k" in found.message
    assert "unusable key(s): secret:gone/cosign.pub (Secret imagepatch-system/gone not found)" \
        in found.message


def test_signatures_by_another_key_or_of_another_image_are_invalid() -> None:
    private, public = keypair()
    stranger, _ = keypair()
    good_payload = sig.simple_signing_payload(DIGEST, REPO)
    copied = sig.simple_signing_payload(OTHER, REPO)  # a valid signature of another digest
    unread = sig.simple_signing_payload(DIGEST, REPO + "x")
    entries = [entry(good_payload, sig.sign(stranger, good_payload)),
               entry(copied, sig.sign(private, copied)),
               entry(unread, sig.sign(private, unread))]
    found = sig.check(
        digest=DIGEST, repository=REPO, entries=entries,
        payloads={e.payload_digest: p for e, p in zip(entries, (good_payload, copied), strict=False)},
        keys={"secret:ci/cosign.pub": public},
    )
    assert found.result == sig.INVALID
    assert found.message.startswith(f"3 signature(s) of {DIGEST} found, none valid for the key(s) "
                                    "secret:ci/cosign.pub")
    assert "a signature (tag) verifies with none of the keys" in found.message
    assert f"a signature by secret:ci/cosign.pub (tag) is not valid here: it signs {OTHER}" \
        in found.message
    assert "could not be read" in found.message


def test_only_keyless_identities_or_unusable_keys_fail_closed() -> None:
    keyless_only = sig.check(digest=DIGEST, repository=REPO, entries=[], payloads={}, keys={},
                             keyless=1)
    assert keyless_only.result == sig.UNVERIFIABLE
    assert "1 keyless identity cannot be verified by this operator" in keyless_only.message
    two = sig.check(digest=DIGEST, repository=REPO, entries=[], payloads={},
                    keys={"secret:x/cosign.pub": "not an ECDSA P-256 public key"}, keyless=2)
    assert two.result == sig.UNVERIFIABLE
    assert "2 keyless identities" in two.message and "secret:x/cosign.pub (not an ECDSA" in two.message


def test_the_sig_manifest_keeps_earlier_signatures_and_lists_their_diff_ids() -> None:
    payload = sig.simple_signing_payload(DIGEST, REPO)
    first, config = sig.signature_manifest(None, payload=payload, signature="AAA=")
    doc = json.loads(first)
    assert doc["mediaType"] == sig.OCI_MANIFEST
    assert doc["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert sig.entries_of(doc, source="tag") == [entry(payload, "AAA=")]
    second, config2 = sig.signature_manifest(doc, payload=payload, signature="BBB=")
    doc2 = json.loads(second)
    assert [e.signature for e in sig.entries_of(doc2, source="tag")] == ["AAA=", "BBB="]
    assert json.loads(config2)["rootfs"]["diff_ids"] == [entry(payload, "").payload_digest] * 2


# -- the place of the check in verification ------------------------------------------------


PASSED = rebuilds.Verification(result="Passed", message="base digest, platforms verified",
                               base_digest=OTHER)
WAIT = dt.timedelta(minutes=5)


def test_a_verified_signature_keeps_the_verification_passed() -> None:
    found = sig.SignatureCheck(result=sig.VERIFIED, message="signed by secret:ci/cosign.pub (tag)",
                               key="secret:ci/cosign.pub")
    out = rebuilds.with_signature(PASSED, found, waited=dt.timedelta(0), wait_for=WAIT)
    assert out.result == "Passed" and out.signature == found
    assert out.message == "base digest, platforms verified; signed by secret:ci/cosign.pub (tag)"


def test_a_missing_signature_is_waited_for_then_fails_signature_missing() -> None:
    found = sig.SignatureCheck(result=sig.MISSING, message="no cosign signature")
    waiting = rebuilds.with_signature(PASSED, found, waited=dt.timedelta(minutes=1), wait_for=WAIT)
    assert waiting.result == "Pending" and "waiting up to 0:05:00 for a signature" in waiting.message
    late = rebuilds.with_signature(PASSED, found, waited=dt.timedelta(minutes=6), wait_for=WAIT)
    assert (late.result, late.reason) == ("Failed", reasons.SIGNATURE_MISSING)


@pytest.mark.parametrize(("result", "reason"), [
    (sig.INVALID, reasons.SIGNATURE_INVALID), (sig.UNVERIFIABLE, reasons.SIGNATURE_UNVERIFIABLE)])
def test_invalid_or_unverifiable_signatures_fail_at_once(result: str, reason: str) -> None:
    found = sig.SignatureCheck(result=result, message="none valid")
    out = rebuilds.with_signature(PASSED, found, waited=dt.timedelta(0), wait_for=WAIT)
    assert (out.result, out.reason, out.message) == ("Failed", reason, "none valid")


def test_a_verification_that_failed_already_is_not_changed() -> None:
    failed = rebuilds.Verification(result="Failed", message="platforms changed")
    found = sig.SignatureCheck(result=sig.VERIFIED, message="signed")
    assert rebuilds.with_signature(failed, found, waited=dt.timedelta(0), wait_for=WAIT) is failed


def test_a_failed_signature_stalls_the_patch_with_its_reason_and_is_recorded() -> None:
    found = sig.SignatureCheck(result=sig.INVALID, message="none valid for secret:ci/cosign.pub",
                               keys_tried=("secret:ci/cosign.pub",))
    failed = rebuilds.with_signature(PASSED, found, waited=dt.timedelta(0), wait_for=WAIT)
    recorded = RebuildStatus(strategy="external", started_at="2026-12-05T10:00:00Z",
                             build_id="b", finished_at="2026-12-05T10:01:00Z", digest=DIGEST)
    step = rebuilds.decide_rebuild(rebuild=recorded, key="k", strategy="external", build=None,
                                   verification=failed,
                                   now=dt.datetime(2026, 12, 5, 10, 2, tzinfo=dt.UTC))
    assert step.phase == "Failed" and step.stalled == reasons.SIGNATURE_INVALID
    assert step.failed_digest == DIGEST
    status = VerificationStatus.parse(step.fields["verification"])
    assert status.signature == {"result": "Invalid", "message": "none valid for secret:ci/cosign.pub",
                                "keysTried": ["secret:ci/cosign.pub"]}
    assert VerificationStatus.parse(status.to_dict()) == status


# -- the policy ----------------------------------------------------------------------------


def test_the_policy_names_keys_keyless_identities_and_a_wait() -> None:
    spec = parse_policy_spec({**SELECTOR, "verification": {"signatures": {
        "keys": [{"secretName": "cosign-ci"},
                 {"secretName": "other", "secretKey": "ci.pub"},
                 {"kmsKey": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab"}],
        "keyless": [{"issuer": "https://token.actions.githubusercontent.com",
                     "subjectRegExp": "^https://github.com/org/.*$"}],
        "waitFor": "30s"}}})
    required = spec.verification.signatures
    assert required is not None
    assert [k.describe() for k in required.keys] == [
        "secret:cosign-ci/cosign.pub", "secret:other/ci.pub",
        "kms:arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab"]
    assert required.keyless[0].subject_regexp == "^https://github.com/org/.*$"
    assert required.wait_for == dt.timedelta(seconds=30)
    assert parse_policy_spec(SELECTOR).verification.signatures is None


def test_the_rebase_signing_key_defaults_to_the_cosign_key_data_key() -> None:
    spec = parse_policy_spec({**SELECTOR, "rebuild": {"strategy": "rebase",
                                                      "rebase": {"signingKey": {"secretName": "k"}}}})
    assert spec.rebuild.rebase.signing_key == KeyRef(secret_name="k", secret_key="cosign.key")
    assert parse_policy_spec(SELECTOR).rebuild.rebase.signing_key is None


@pytest.mark.parametrize(("verification", "field", "problem"), [
    ({"signatures": {}}, "spec.verification.signatures", "at least one key or keyless identity"),
    ({"signatures": {"keys": [{}]}}, "spec.verification.signatures.keys[0]",
     "exactly one of secretName and kmsKey"),
    ({"signatures": {"keys": [{"secretName": "a", "kmsKey": "arn:aws:kms:us-east-1:123456789012:key/k"}]}},
     "spec.verification.signatures.keys[0]", "exactly one of secretName and kmsKey"),
    ({"signatures": {"keys": [{"kmsKey": "alias/mine"}]}},
     "spec.verification.signatures.keys[0].kmsKey", "must be an AWS KMS key or alias ARN"),
    ({"signatures": {"keys": [{"secretName": "a", "secretKey": "a b"}]}},
     "spec.verification.signatures.keys[0].secretKey", "must be a Secret data key"),
    ({"signatures": {"keyless": [{"issuer": "i", "subjectRegExp": "("}]}},
     "spec.verification.signatures.keyless[0].subjectRegExp", "must be a regular expression"),
    ({"signatures": {"keyless": [{"issuer": "i", "subjectRegExp": ""}]}},
     "spec.verification.signatures.keyless[0].subjectRegExp", "must not be empty"),
    ({"signatures": {"keys": [{"secretName": "a"}], "waitFor": "25h"}},
     "spec.verification.signatures.waitFor", "at most 24h"),
])
def test_a_bad_signature_policy_names_its_field(verification: dict, field: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy_spec({**SELECTOR, "verification": verification})
    assert caught.value.field == field and problem in str(caught.value)
