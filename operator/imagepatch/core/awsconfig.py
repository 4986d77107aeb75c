"""AWS Config evaluations of opted-in workloads: what each says, and which to send (pure).

"AWS Config tracks patch state" holds for instances through Patch Manager;
imagepatch makes it hold for containers by reporting each opted-in workload
as an evaluation of a custom Config rule (``PutEvaluations``).
``adapters/awsconfig.py`` sends them; this module decides:

* :func:`evaluation`: a workload's compliance state (``core/compliance.py``)
  as a Config compliance type, with an annotation naming the reason:
  ``Compliant`` is ``COMPLIANT``; ``BaseImageOutdated``, ``Vulnerable``,
  ``UntrustedBase``, ``Failed`` and ``Patching`` (still running the image
  that broke the policy) are ``NON_COMPLIANT``; ``Unknown`` (the facts could
  not be gathered) and a workload that opted out are ``NOT_APPLICABLE``:
  Config's evaluations take no ``INSUFFICIENT_DATA``.
* :func:`resource_id`: the evaluated resource's id, the workload's full key
  (cluster, namespace, kind, name), so a StatefulSet and a Deployment of one
  name are two resources.
* :func:`plan`: only what changed since the last send, per policy; a
  workload its policy no longer evaluates (deleted, moved to another policy
  that has not claimed it) is sent once as ``NOT_APPLICABLE``.
* :func:`batches`: at most 100 evaluations a call (the API's limit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "COMPLIANT",
    "DEFAULT_RESOURCE_TYPE",
    "MAX_ANNOTATION",
    "MAX_BATCH",
    "NON_COMPLIANT",
    "NOT_APPLICABLE",
    "Evaluation",
    "Sent",
    "WorkloadLike",
    "batches",
    "evaluation",
    "plan",
    "resource_id",
]

COMPLIANT, NON_COMPLIANT, NOT_APPLICABLE = "COMPLIANT", "NON_COMPLIANT", "NOT_APPLICABLE"
# A custom resource type: Kubernetes workloads are not AWS resources. Config
# takes evaluations of a type it does not record; registering the type with
# CloudFormation (docs/aws.md) also gives it an inventory and history.
DEFAULT_RESOURCE_TYPE = "Imagepatch::Kubernetes::Workload"
MAX_BATCH = 100  # PutEvaluations: Evaluations, at most 100 items
MAX_ANNOTATION = 256  # Evaluation.Annotation: 1 to 256 characters
MAX_RESOURCE_ID = 768  # ComplianceResourceId (BaseResourceId): 1 to 768 characters

_NON_COMPLIANT_STATES = {"BaseImageOutdated", "Vulnerable", "UntrustedBase", "Failed",
                         "Patching"}
_WORDS = {
    "Compliant": "runs images that meet the policy",
    "BaseImageOutdated": "an image's base image has a newer digest",
    "Vulnerable": "an image has findings over the policy's baseline",
    "UntrustedBase": "an image's base is not one the policy trusts",
    "Failed": "the last patch for its image failed or was rolled back",
    "Patching": "a patch is rolling out; it still runs the image that broke the policy",
    "Unknown": "its images could not be evaluated",
}


class WorkloadLike(Protocol):
    """What is read of a detection result (``reconcile.detection.WorkloadResult``)."""

    @property
    def kind(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One evaluation as ``PutEvaluations`` takes it (the timestamp is the send's)."""

    resource_id: str
    compliance: str
    annotation: str

    def request(self, resource_type: str, at: dt.datetime) -> dict[str, object]:
        return {
            "ComplianceResourceType": resource_type,
            "ComplianceResourceId": self.resource_id,
            "ComplianceType": self.compliance,
            "Annotation": self.annotation,
            "OrderingTimestamp": at,
        }


@dataclass(frozen=True, kw_only=True)
class Sent:
    """What was last sent for a resource, and for which policy."""

    policy: str
    compliance: str
    annotation: str


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resource_id(cluster: str, kind: str, namespace: str, name: str) -> str:
    """``<cluster>/<namespace>/<kind>/<name>``: the workload's full key."""
    return _clip(f"{cluster}/{namespace}/{kind}/{name}", MAX_RESOURCE_ID)


def evaluation(cluster: str, workload: WorkloadLike, *, policy: str) -> Evaluation:
    """A workload's compliance state as a Config evaluation."""
    state = workload.state
    if state == "Compliant":
        compliance = COMPLIANT
    elif state in _NON_COMPLIANT_STATES:
        compliance = NON_COMPLIANT
    else:
        compliance = NOT_APPLICABLE
    words = _WORDS.get(state, "its state is not one imagepatch knows")
    detail = f": {workload.message}" if workload.message and state != "Compliant" else ""
    return Evaluation(
        resource_id=resource_id(cluster, workload.kind, workload.namespace, workload.name),
        compliance=compliance,
        annotation=_clip(f"{state} (policy {policy}): {words}{detail}", MAX_ANNOTATION),
    )


def plan(
    *,
    cluster: str,
    policy: str,
    results: Iterable[WorkloadLike],
    sent: Mapping[str, Sent],
    opted_out: Collection[tuple[str, str, str]] = (),
) -> list[Evaluation]:
    """The evaluations to send for ``policy``'s ``results``: only the changed ones.

    ``sent`` maps resource ids to what was last sent. A resource this policy
    sent before and no longer evaluates is sent once as ``NOT_APPLICABLE``
    (saying whether it opted out), unless another policy has sent it since.
    ``opted_out``: (kind, namespace, name) of workloads seen to opt out.
    """
    out: list[Evaluation] = []
    seen: set[str] = set()
    for workload in results:
        ev = evaluation(cluster, workload, policy=policy)
        seen.add(ev.resource_id)
        last = sent.get(ev.resource_id)
        if last is None or (last.compliance, last.annotation) != (ev.compliance, ev.annotation):
            out.append(ev)
    gone_out = {resource_id(cluster, *key) for key in opted_out}
    for rid, last in sorted(sent.items()):
        retired = last.compliance == NOT_APPLICABLE and last.annotation.startswith("NotEvaluated")
        if rid in seen or last.policy != policy or retired:
            continue
        why = ("the workload opted out" if rid in gone_out
               else "the policy no longer evaluates it (deleted or moved)")
        out.append(Evaluation(resource_id=rid, compliance=NOT_APPLICABLE,
                              annotation=_clip(f"NotEvaluated (policy {policy}): {why}",
                                               MAX_ANNOTATION)))
    return out


def batches(evaluations: Sequence[Evaluation], size: int = MAX_BATCH) -> Iterator[list[Evaluation]]:
    """``evaluations`` in calls of at most ``size``."""
    for start in range(0, len(evaluations), size):
        yield list(evaluations[start:start + size])
