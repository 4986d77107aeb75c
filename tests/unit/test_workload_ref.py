"""Argo Rollouts with spec.workloadRef: read through the referenced Deployment (issue 23)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from imagepatch.core import kinds, workload_ref
from imagepatch.core.detection.workload import judged_containers, slim, unusable
from imagepatch.core.health import HealthState
from imagepatch.core.reasons import INVALID_ANNOTATION, WORKLOAD_REF_UNRESOLVED
from imagepatch.reconcile.detection import Detector
from tests.unit import test_detection_isolation
from tests.unit.test_kinds import NEW
from tests.unit.test_kinds_rollout import judge, rollout

REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-template", "scaleDown": "never"}


def referencing(ref: dict[str, Any] | None = None, *, selector: bool = True) -> dict[str, Any]:
    """An opted-in Rollout without a template of its own, referencing a Deployment."""
    body = rollout()
    del body["spec"]["template"]
    body["spec"]["workloadRef"] = dict(REF if ref is None else ref)
    body["metadata"]["annotations"] = {"imagepatch.dev/policy": "shared"}
    if selector:
        body["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    body["status"]["workloadObservedGeneration"] = "5"
    return body


def deployment(*, consent: str | None = "web", generation: int = 5) -> dict[str, Any]:
    annotations = {} if consent is None else {"imagepatch.dev/rollout": consent}
    return {
        "metadata": {"name": "web-template", "namespace": "shop", "resourceVersion": "42",
                     "generation": generation, "annotations": annotations},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "from-deployment"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
    }


def test_a_rollout_without_workload_ref_is_left_as_it_is() -> None:
    body = rollout()
    assert workload_ref.reference(body) is None
    assert workload_ref.resolve(body, None) == body
    assert workload_ref.resolved(body) is None and workload_ref.problem(body) == ""


def test_a_resolved_rollout_runs_the_deployments_template_and_remembers_its_version() -> None:
    body = referencing()
    assert workload_ref.deployment_name(body) == "web-template"
    resolved = workload_ref.resolve(body, deployment())
    assert [c["image"] for _, c in kinds.containers(resolved)] == [NEW]
    assert resolved["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # the Rollout's own
    assert workload_ref.resolved(resolved) == {
        "deployment": "web-template", "resourceVersion": "42", "generation": "5", "problem": ""}
    assert unusable(resolved) == ("", "")
    assert "template" not in body["spec"]  # the body read is not changed


def test_a_rollout_without_a_selector_takes_the_deployments_as_argo_does() -> None:
    resolved = workload_ref.resolve(referencing(selector=False), deployment())
    assert resolved["spec"]["selector"] == {"matchLabels": {"app": "from-deployment"}}


@pytest.mark.parametrize(("ref", "deployment_body", "says"), [
    pytest.param(None, None, "Deployment shop/web-template through spec.workloadRef, and it does"
                 " not exist", id="missing"),
    pytest.param({**REF, "kind": "ReplicaSet"}, None, "references ReplicaSet apps/v1 web-template",
                 id="not-a-deployment"),
    pytest.param({**REF, "apiVersion": "extensions/v1beta1"}, None,
                 "references Deployment extensions/v1beta1 web-template", id="not-apps-v1"),
    pytest.param({**REF, "namespace": "other"}, None, "a Deployment of namespace other",
                 id="another-namespace"),
    pytest.param({**REF, "name": ""}, None, "a Deployment without a name", id="no-name"),
    pytest.param(None, deployment(consent=None), "does not carry the annotation"
                 " imagepatch.dev/rollout: web", id="no-consent"),
    pytest.param(None, deployment(consent="api"), "imagepatch.dev/rollout: web",
                 id="consent-for-another-rollout"),
])
def test_a_workload_ref_imagepatch_cannot_follow_is_unknown_naming_it(
    ref: dict[str, Any] | None, deployment_body: dict[str, Any] | None, says: str
) -> None:
    resolved = workload_ref.resolve(referencing(ref), deployment_body)
    reason, why = unusable(resolved)
    assert reason == WORKLOAD_REF_UNRESOLVED and says in why, why
    assert why.startswith("Rollout shop/web references")
    # Nothing of the Deployment is read, and one entry named workloadRef carries the state.
    assert judged_containers(resolved) == [{"name": "workloadRef", "image": ""}]


def test_unsupported_references_name_no_deployment_to_read() -> None:
    assert workload_ref.deployment_name(referencing({**REF, "kind": "ReplicaSet"})) == ""
    assert workload_ref.deployment_name(referencing({**REF, "namespace": "other"})) == ""


def test_an_annotation_problem_comes_before_the_workload_ref() -> None:
    resolved = workload_ref.resolve(referencing(), None)
    resolved["metadata"]["annotations"]["imagepatch.dev/base-image"] = "not an image!"
    assert unusable(resolved)[0] == INVALID_ANNOTATION
    resolved_ok = workload_ref.resolve(referencing(), deployment())
    assert judged_containers(resolved_ok) == [{"name": "app", "image": NEW}]


def test_detection_keeps_the_workload_ref_of_a_watched_rollout() -> None:
    assert slim(referencing())["spec"]["workloadRef"] == REF


def test_the_gate_waits_until_argo_observed_the_deployments_generation() -> None:
    # imagepatch wrote the Deployment (generation 6); Argo still reports generation 5's verdict
    ahead = workload_ref.resolve(referencing(), deployment(generation=6))
    verdict = judge(ahead)
    assert verdict.state == HealthState.PROGRESSING
    assert "has not observed the latest generation" in verdict.message
    # Once Argo observed it, its verdict counts
    assert judge(workload_ref.resolve(referencing(), deployment())).state == HealthState.HEALTHY


class RefKube(test_detection_isolation.MemoryKube):
    """Detection's in-memory kube, with Deployments a Rollout may reference."""

    def __init__(self, deployments: dict[str, dict[str, Any]]) -> None:
        super().__init__([test_detection_isolation.policy("a")])
        self.deployments = deployments

    async def resolve_workload_ref(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return workload_ref.resolve(obj, self.deployments.get(workload_ref.deployment_name(obj)))


def watched_rollout(image_deployment: str = "web-template") -> dict[str, Any]:
    body = test_detection_isolation.deployment("web", "", "a")
    body["kind"] = "Rollout"
    del body["spec"]["template"]
    body["spec"]["workloadRef"] = {**REF, "name": image_deployment}
    return body


def test_detection_judges_a_workload_ref_rollout_by_its_deployments_containers() -> None:
    image = f"{test_detection_isolation.ECR}/app:1"
    template = deployment()
    template["spec"]["template"]["spec"]["containers"][0]["image"] = image
    kube = RefKube({"web-template": template})
    detector = Detector(kube=kube, registry=test_detection_isolation.MemoryRegistry({}))
    test_detection_isolation.run_pass(detector, watched_rollout())
    state = kube.state("web")
    assert state["state"] == "Compliant", state
    assert [c["name"] for c in state["containers"]] == ["app"]
    assert kube.kinds[("ns", "web")] == "Rollout"


def test_detection_reports_a_rollout_whose_deployment_is_missing_unknown_naming_it() -> None:
    kube = RefKube({})
    detector = Detector(kube=kube, registry=test_detection_isolation.MemoryRegistry({}))
    test_detection_isolation.run_pass(detector, watched_rollout("gone"))
    state = kube.state("web")
    assert state["state"] == "Unknown"
    [container] = state["containers"]
    assert container["name"] == "workloadRef"
    assert container["reason"] == WORKLOAD_REF_UNRESOLVED
    assert "Deployment ns/gone through spec.workloadRef, and it does not exist" in (
        container["message"])
