"""Only signed rebuilds roll out: cosign signatures checked before any rollout.

Given a policy that requires a signature by the CI's cosign key
(``spec.verification.signatures.keys``: a Secret in the operator's
namespace holding ``cosign.pub``) and three apps whose base moved, when CI
pushes each rebuild under the tag its patch names (the ``external``
strategy), signed with the CI key by the real cosign v2.6.5
(``cosign sign --key --tlog-upload=false``), unsigned, or signed with
another key, then the first is rolled out with ``status.verification.signature``
naming the key (and ``status.verification.provenance`` the builder of its
SLSA provenance, which the policy also requires: ``cosign attest --type
slsaprovenance``), the second fails ``SignatureMissing`` once ``waitFor`` has
passed, and the third fails ``SignatureInvalid`` naming the key tried; the
Deployments of the last two keep their image.

And given a policy whose rebuilds are rebases (no CI at all) signed with
``spec.rebuild.rebase.signingKey``, the operator signs what it pushes, its
own policy (which requires that key's signature) accepts it, and
``cosign verify --key`` accepts it too.

CI signs the digest before it tags it, as a pipeline that signs then
promotes does, so the test never races the operator's first look.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.cosign import Cosign
from tests.support.images import ImageRef, make_base_image
from tests.support.operator import (
    NAMESPACE,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

ROLLOUT = {"progressDeadlineSeconds": 60, "healthyFor": "2s", "maxRestarts": 0}


@pytest.fixture(scope="module")
def signing_operator(kube, crds, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("signatures")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--detect-tick", "1"],
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, signing_operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def key_secret(given: Scenario, name: str, **files: Path) -> None:
    """A Secret in the operator's namespace, as an admin makes it from key files."""
    args = [f"--from-file={key}={path}" for key, path in files.items()]
    manifest = given.kube.kubectl("create", "secret", "generic", name, "-n", NAMESPACE, *args,
                                  "--dry-run=client", "-o", "json")
    given.kube.kubectl("apply", "-f", "-", input=manifest)


def apps_on_a_moved_base(given: Scenario, registry, buildah, policy: str, count: int
                         ) -> tuple[list[tuple[str, str, ImageRef]], ImageRef]:
    """``count`` apps on base v1, each in its own namespace; then base v2 is pushed.

    Returns ([(namespace, app repository, running image)], base v2).
    """
    base_repo = unique("sbase")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    apps = []
    for _ in range(count):
        repo, ns = unique("sapp"), given.namespace()
        running = buildah.build_app(base_v1, repo, "1", pinned=False)
        given.deployment(ns, "web", image=f"{registry.host}/{repo}:1", policy=policy, replicas=1)
        apps.append((ns, repo, running))
    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={dt.datetime.now(dt.UTC).isoformat()}")
    return apps, base_v2


def patch_of(given: Scenario, policy: str, image: str, timeout: float = 90) -> str:
    def probe():
        items = json.loads(given.kube.kubectl(
            "get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
        return next((p["metadata"]["name"] for p in items if p["spec"]["image"] == image), None)
    return wait_for(probe, timeout=timeout, what=f"the ImagePatch of {image}")


def test_a_signed_rebuild_rolls_out_and_unsigned_or_foreign_ones_fail(
    given, registry, buildah, cosign: Cosign
) -> None:
    ci, stranger = cosign.generate_key_pair(unique("ci")), cosign.generate_key_pair(unique("x"))
    secret, policy = unique("cosign-ci"), unique("pol")
    key_secret(given, secret, **{"cosign.pub": ci.public})
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild={"strategy": "external"},
                 rollout=ROLLOUT,
                 verification={"signatures": {"keys": [{"secretName": secret}], "waitFor": "3s"},
                               "provenance": {"builderIdRegExp": r"https://ci\.example/.+"}})
    apps, base_v2 = apps_on_a_moved_base(given, registry, buildah, policy, 3)
    patches = [patch_of(given, policy, f"{registry.host}/{repo}") for _, repo, _ in apps]

    pushed = []
    for (_, repo, _), patch, signer in zip(apps, patches, (ci, None, stranger), strict=True):
        tag = given.pushed_tag(patch)
        # CI: build on the new base, sign the digest (or not), then tag it.
        built = buildah.build_app(base_v2, repo, f"ci-{uuid.uuid4().hex[:6]}")
        if signer is not None:
            cosign.sign(built.pinned, signer)
            cosign.attest_provenance(built.pinned, signer, "https://ci.example/pipelines/build")
        body, media_type, _ = registry.get_manifest(repo, built.digest)
        registry.put_manifest(repo, tag, body, media_type)
        pushed.append(built)

    (signed_ns, _, _), (missing_ns, missing_repo, _), (foreign_ns, foreign_repo, _) = apps
    done = given.wait_phase(patches[0], "Succeeded", "Failed", "RolledBack", timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    signature = done["status"]["verification"]["signature"]
    assert signature == {"result": "Verified", "key": f"secret:{secret}/cosign.pub",
                         "keysTried": [f"secret:{secret}/cosign.pub"], "source": "tag",
                         "message": f"signed by secret:{secret}/cosign.pub (tag)"}
    assert done["status"]["verification"]["provenance"] == {
        "result": "Verified", "builderId": "https://ci.example/pipelines/build",
        "key": f"secret:{secret}/cosign.pub",
        "message": f"SLSA provenance by secret:{secret}/cosign.pub: built by "
                   "https://ci.example/pipelines/build"}
    assert given.image_of(signed_ns, "web").endswith(f"@{pushed[0].digest}")

    missing = given.wait_phase(patches[1], "Succeeded", "Failed", "RolledBack", timeout=120)
    status = missing["status"]
    assert status["phase"] == "Failed", status
    assert status["verification"]["signature"]["result"] == "Missing"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "SignatureMissing", stalled
    assert f"no cosign signature of {pushed[1].digest}" in stalled["message"]
    assert f"secret:{secret}/cosign.pub" in stalled["message"]
    assert given.image_of(missing_ns, "web") == f"{registry.host}/{missing_repo}:1"

    foreign = given.wait_phase(patches[2], "Succeeded", "Failed", "RolledBack", timeout=120)
    status = foreign["status"]
    assert status["phase"] == "Failed", status
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "SignatureInvalid", stalled
    assert f"none valid for the key(s) secret:{secret}/cosign.pub" in stalled["message"]
    assert status["verification"]["signature"]["keysTried"] == [f"secret:{secret}/cosign.pub"]
    assert given.image_of(foreign_ns, "web") == f"{registry.host}/{foreign_repo}:1"
    # What rolled out is what the CI key signed, as cosign itself sees it.
    assert cosign.verify(pushed[0].pinned, ci.public).returncode == 0
    assert cosign.verify(pushed[2].pinned, ci.public).returncode != 0


def test_the_rebase_signs_its_output_and_passes_its_own_policy(
    given, registry, buildah, cosign: Cosign, tmp_path: Path
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key_file, pub_file = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    key_file.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub_file.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signing, verifying, policy = unique("rebase-key"), unique("rebase-pub"), unique("pol")
    key_secret(given, signing, **{"cosign.key": key_file})
    key_secret(given, verifying, **{"cosign.pub": pub_file})
    given.policy(policy, baseImages={"checkInterval": "1h"}, rollout=ROLLOUT,
                 rebuild={"strategy": "rebase", "rebase": {"signingKey": {"secretName": signing}}},
                 verification={"signatures": {"keys": [{"secretName": verifying}]}})
    [(ns, repo, _)], _ = apps_on_a_moved_base(given, registry, buildah, policy, 1)
    patch = patch_of(given, policy, f"{registry.host}/{repo}")

    done = given.wait_phase(patch, "Succeeded", "Failed", "RolledBack", timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    digest = done["status"]["rebuild"]["digest"]
    assert f"signed with secret:{signing}/cosign.key" in done["status"]["rebuild"]["message"]
    assert done["status"]["verification"]["signature"]["key"] == f"secret:{verifying}/cosign.pub"
    assert given.image_of(ns, "web").endswith(f"@{digest}")
    verified = cosign.verify(f"{registry.host}/{repo}@{digest}", pub_file)
    assert verified.returncode == 0, verified.stderr
