"""SLSA provenance attestations as pure decisions (core.provenance) and in verification.

Envelopes are made here as ``cosign attest --type slsaprovenance`` makes
them (read from its output in tests/integration/test_signatures.py): a DSSE
envelope of an in-toto statement, signed over DSSE's PAE.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from imagepatch.core import provenance as slsa
from imagepatch.core import reasons
from imagepatch.core import rebuild as rebuilds
from imagepatch.core import signatures as sig
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import parse_policy_spec
from imagepatch.model.rebuild_status import VerificationStatus

DIGEST = "sha256:" + "ab" * 32
BUILDER = "https://github.com/org/app/.github/workflows/build.yml@refs/heads/main"
PATTERN = r"https://github\.com/org/.+@refs/heads/main"
KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {"secret:ci/cosign.pub": KEY.public_key()}


def statement(*, digest: str = DIGEST, builder: str = BUILDER, version: str = slsa.SLSA_V02) -> dict:
    predicate = ({"builder": {"id": builder}, "buildType": "x"} if version == slsa.SLSA_V02
                 else {"buildDefinition": {}, "runDetails": {"builder": {"id": builder}}})
    return {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": version,
            "subject": [{"name": "r/app", "digest": {"sha256": digest.partition(":")[2]}}],
            "predicate": predicate}


def envelope(doc: object, *, key: ec.EllipticCurvePrivateKey = KEY,
             payload_type: str = slsa.IN_TOTO) -> bytes:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    signature = sig.sign(key, slsa.pae(payload_type, payload))
    return json.dumps({"payloadType": payload_type, "payload": base64.b64encode(payload).decode(),
                       "signatures": [{"keyid": "", "sig": signature}]}).encode()


def test_the_attestation_tag_and_its_envelope_layers() -> None:
    assert slsa.attestation_tag(DIGEST) == "sha256-" + "ab" * 32 + ".att"
    manifest = {"layers": [
        {"mediaType": slsa.DSSE_ENVELOPE, "size": 728, "digest": DIGEST,
         "annotations": {"predicateType": slsa.SLSA_V02}},
        {"mediaType": sig.SIMPLE_SIGNING, "size": 1, "digest": DIGEST},
        {"mediaType": slsa.DSSE_ENVELOPE, "size": 10**9, "digest": DIGEST},
        {"mediaType": slsa.DSSE_ENVELOPE, "size": 1, "digest": "nope"}, "junk"]}
    assert slsa.envelope_layers(manifest) == [DIGEST]


def test_pae_is_dsse_v1() -> None:
    assert slsa.pae("t", b"hello") == b"DSSEv1 1 t 5 hello"


@pytest.mark.parametrize("version", [slsa.SLSA_V02, slsa.SLSA_V1])
def test_a_signed_provenance_of_the_digest_by_an_accepted_builder_is_verified(version: str) -> None:
    found = slsa.check(digest=DIGEST, envelopes=[envelope(statement(version=version))],
                       builder_pattern=PATTERN, keys=KEYS)
    assert (found.result, found.builder_id, found.key) == ("Verified", BUILDER,
                                                            "secret:ci/cosign.pub")
    assert found.to_dict() == {"result": "Verified", "builderId": BUILDER,
                               "key": "secret:ci/cosign.pub",
                               "message": f"SLSA provenance by secret:ci/cosign.pub: built by {BUILDER}"}


def test_no_attestation_is_missing() -> None:
    found = slsa.check(digest=DIGEST, envelopes=[], builder_pattern=PATTERN, keys=KEYS)
    assert found.result == "Missing" and slsa.attestation_tag(DIGEST) in found.message
    assert found.to_dict() == {"result": "Missing", "message": found.message}


@pytest.mark.parametrize(("env", "problem"), [
    (b"not json", "is not a DSSE envelope"),
    (envelope(statement(), key=ec.generate_private_key(ec.SECP256R1())),
     "signed by none of the keys"),
    (envelope(statement(), payload_type="text/plain"), "is not an in-toto statement"),
    (envelope(b"not json"), "is not JSON"),
    (envelope({"predicateType": "https://spdx.dev/Document"}), "is not SLSA provenance"),
    (envelope(statement(digest="sha256:" + "cd" * 32)), f"is not about {DIGEST}"),
    (envelope(statement(builder="https://evil.example/builder")),
     "names builder 'https://evil.example/builder', which does not match"),
    (envelope({**statement(), "predicate": "nope"}), "names builder ''"),
])
def test_an_attestation_that_is_not_acceptable_is_invalid(env: bytes, problem: str) -> None:
    found = slsa.check(digest=DIGEST, envelopes=[env], builder_pattern=PATTERN,
                       keys={**KEYS, "secret:gone/cosign.pub": "not found"})
    assert found.result == "Invalid"
    assert found.message.startswith(f"1 attestation(s) of {DIGEST}, none acceptable: ")
    assert problem in found.message


PASSED = rebuilds.Verification(result="Passed", message="base digest, platforms verified; signed")
WAIT = dt.timedelta(minutes=5)


def test_provenance_in_verification() -> None:
    ok = slsa.ProvenanceCheck(result="Verified", message="SLSA provenance by k: built by b")
    out = rebuilds.with_provenance(PASSED, ok, waited=dt.timedelta(0), wait_for=WAIT)
    assert out.result == "Passed" and out.message.endswith("; SLSA provenance by k: built by b")
    missing = slsa.ProvenanceCheck(result="Missing", message="no provenance")
    waiting = rebuilds.with_provenance(PASSED, missing, waited=dt.timedelta(0), wait_for=WAIT)
    assert waiting.result == "Pending" and "for a provenance attestation" in waiting.message
    late = rebuilds.with_provenance(PASSED, missing, waited=dt.timedelta(hours=1), wait_for=WAIT)
    assert (late.result, late.reason) == ("Failed", reasons.PROVENANCE_MISSING)
    bad = slsa.ProvenanceCheck(result="Invalid", message="another builder")
    out = rebuilds.with_provenance(PASSED, bad, waited=dt.timedelta(0), wait_for=WAIT)
    assert (out.result, out.reason, out.message) == ("Failed", reasons.PROVENANCE_INVALID,
                                                     "another builder")
    failed = rebuilds.Verification(result="Failed", message="x")
    assert rebuilds.with_provenance(failed, ok, waited=dt.timedelta(0), wait_for=WAIT) is failed
    status = VerificationStatus(result="Failed", message="m", provenance=bad.to_dict())
    assert VerificationStatus.parse(status.to_dict()) == status
    assert status.to_dict()["provenance"] == {"result": "Invalid", "message": "another builder"}


def test_the_policy_asks_for_provenance_signed_with_its_signature_keys() -> None:
    spec = parse_policy_spec({"namespaceSelector": {}, "verification": {
        "signatures": {"keys": [{"secretName": "ci"}]},
        "provenance": {"builderIdRegExp": PATTERN}}})
    assert spec.verification.provenance is not None
    assert spec.verification.provenance.builder_id_regexp == PATTERN
    for verification in ({"provenance": {"builderIdRegExp": PATTERN}},
                         {"signatures": {"keyless": [{"issuer": "i", "subjectRegExp": "s"}]},
                          "provenance": {"builderIdRegExp": PATTERN}}):
        with pytest.raises(SpecError) as caught:
            parse_policy_spec({"namespaceSelector": {}, "verification": verification})
        assert caught.value.field == "spec.verification.provenance"
        assert "needs spec.verification.signatures.keys" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        parse_policy_spec({"namespaceSelector": {}, "verification": {
            "signatures": {"keys": [{"secretName": "ci"}]}, "provenance": {}}})
    assert caught.value.field == "spec.verification.provenance.builderIdRegExp"
