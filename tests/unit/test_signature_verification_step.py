"""The signature and provenance steps of a rebuild's verification (reconcile.rebuilds).

``verify_signature`` runs after the base, platform and findings checks: it
asks the verifier (here an in-memory one standing in for
``adapters.signatures.SignatureVerifier``), and turns what it says, or a
registry/KMS error, into the verification the planner records. The rebase
builder's signing step maps a key that cannot sign to ``SigningFailed``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from imagepatch.adapters.builders import BuildRequest
from imagepatch.adapters.builders.rebase import RebaseBuilder
from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.core import provenance as slsa
from imagepatch.core import reasons
from imagepatch.core import rebuild as rebuilds
from imagepatch.core import signatures as sig
from imagepatch.core.images import ImageRef
from imagepatch.core.rebase import RebaseRefused
from imagepatch.model.policy import KeyRef, parse_policy_spec
from imagepatch.reconcile.rebuilds import verify_signature

DIGEST = "sha256:" + "ab" * 32
IMAGE = ImageRef(host="registry.example", repository="team/app", digest=DIGEST)
PASSED = rebuilds.Verification(result="Passed", message="base digest, platforms verified")
POLICY = parse_policy_spec({"namespaceSelector": {}, "verification": {
    "signatures": {"keys": [{"secretName": "ci"}], "waitFor": "1m"},
    "provenance": {"builderIdRegExp": "https://ci\\.example/.+"}}})
SIGNED = sig.SignatureCheck(result="Verified", message="signed by secret:ci/cosign.pub (tag)",
                            key="secret:ci/cosign.pub")
ATTESTED = slsa.ProvenanceCheck(result="Verified", message="SLSA provenance by k: built by b",
                                builder_id="b", key="k")


class Verifier:
    """Answers (or raises) what it is given; records what it was asked."""

    def __init__(self, signature: Any = SIGNED, provenance: Any = ATTESTED) -> None:
        self.signature, self.provenance = signature, provenance
        self.asked: list[tuple[str, str]] = []

    async def check(self, registry, repository, digest, requirement):
        self.asked.append(("signature", f"{repository.name}@{digest}"))
        if isinstance(self.signature, Exception):
            raise self.signature
        return self.signature

    async def check_provenance(self, registry, repository, digest, requirement, keys):
        self.asked.append(("provenance", requirement.builder_id_regexp))
        assert [k.describe() for k in keys] == ["secret:ci/cosign.pub"]
        if isinstance(self.provenance, Exception):
            raise self.provenance
        return self.provenance


def step(checked=PASSED, *, verifier=None, policy=POLICY, waited=dt.timedelta(0)):
    return asyncio.run(verify_signature(checked, registry=object(), signatures=verifier,
                                        policy=policy, image=IMAGE, waited=waited))


def test_signed_and_attested_passes_and_records_both() -> None:
    verifier = Verifier()
    out = step(verifier=verifier)
    assert out.result == "Passed" and out.signature == SIGNED and out.provenance == ATTESTED
    assert verifier.asked == [("signature", f"registry.example/team/app@{DIGEST}"),
                              ("provenance", "https://ci\\.example/.+")]


def test_nothing_is_asked_without_a_requirement_or_after_another_check_failed() -> None:
    verifier = Verifier()
    assert step(verifier=verifier, policy=None) is PASSED
    assert step(verifier=verifier, policy=parse_policy_spec({"namespaceSelector": {}})) is PASSED
    failed = rebuilds.Verification(result="Failed", message="platforms changed")
    assert step(failed, verifier=verifier) is failed
    assert verifier.asked == []


def test_no_verifier_fails_closed() -> None:
    out = step(verifier=None)
    assert (out.result, out.reason) == ("Failed", reasons.SIGNATURE_UNVERIFIABLE)


def test_a_registry_that_refuses_the_read_fails_and_a_transient_error_asks_again() -> None:
    refused = step(verifier=Verifier(signature=ConfigurationError("HTTP 403", reason="X")))
    assert (refused.result, refused.reason) == ("Failed", reasons.SIGNATURE_UNVERIFIABLE)
    assert f"the signatures of {DIGEST} could not be read: X: HTTP 403" in refused.message
    assert step(verifier=Verifier(signature=TransientError("503", reason="Y"))) is None
    assert step(verifier=Verifier(provenance=TransientError("503", reason="Y"))) is None


def test_provenance_is_not_asked_for_when_the_signature_failed() -> None:
    verifier = Verifier(signature=sig.SignatureCheck(result="Invalid", message="none valid"))
    out = step(verifier=verifier)
    assert (out.result, out.reason) == ("Failed", reasons.SIGNATURE_INVALID)
    assert [what for what, _ in verifier.asked] == ["signature"]


def test_a_missing_attestation_waits_then_fails() -> None:
    missing = slsa.ProvenanceCheck(result="Missing", message="no provenance attestation")
    assert step(verifier=Verifier(provenance=missing)).result == "Pending"
    late = step(verifier=Verifier(provenance=missing), waited=dt.timedelta(minutes=2))
    assert (late.result, late.reason) == ("Failed", reasons.PROVENANCE_MISSING)


# -- the rebase's signing step -----------------------------------------------------------


class Registry:
    def for_policy(self, policy: str) -> Registry:
        return self


class Signer:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.signed: list[tuple[str, str, str]] = []

    async def sign_and_push(self, registry, repository, digest, key):
        if self.error is not None:
            raise self.error
        self.signed.append((repository.name, digest, key.describe()))
        return "sha256-x.sig"


def request(key: KeyRef | None) -> BuildRequest:
    return BuildRequest(key="k", strategy="rebase", image="registry.example/team/app", tag="1",
                        current_digest=DIGEST, base_name="b", base_digest=DIGEST, signing_key=key)


KEY = KeyRef(secret_name="rebase-key", secret_key="cosign.key")


def test_the_rebase_signs_with_the_policy_key_or_not_at_all() -> None:
    signer = Signer()
    builder = RebaseBuilder(Registry(), signer=signer)  # type: ignore[arg-type]
    assert asyncio.run(builder._sign(request(None), DIGEST)) == ""
    assert asyncio.run(builder._sign(request(KEY), DIGEST)) == "secret:rebase-key/cosign.key"
    assert signer.signed == [("registry.example/team/app", DIGEST, "secret:rebase-key/cosign.key")]


@pytest.mark.parametrize("signer", [None, Signer(ConfigurationError("no such Secret", reason="Z"))])
def test_a_key_that_cannot_sign_fails_the_rebase_signing_failed(signer) -> None:
    builder = RebaseBuilder(Registry(), signer=signer)  # type: ignore[arg-type]
    with pytest.raises(RebaseRefused) as caught:
        asyncio.run(builder._sign(request(KEY), DIGEST))
    assert caught.value.reason == reasons.SIGNING_FAILED
