"""An Argo Rollout that references a Deployment through ``spec.workloadRef`` (issue 23).

Argo's "Migrating to Rollouts": a Rollout may leave ``spec.template`` empty and
name an ``apps/v1`` ``Deployment`` of its own namespace in ``spec.workloadRef``
(``apiVersion``, ``kind``, ``name``; ``scaleDown`` says when Argo scales that
Deployment down). Argo runs the Deployment's pod template, and a template
change is made in the Deployment. So imagepatch:

* **reads** the Rollout *resolved*: the referenced Deployment's
  ``spec.template`` grafted into the Rollout's body (:func:`resolve`), so
  detection, the planner and the gate see the containers Argo runs, while
  the target stays kind ``Rollout``, its namespace, name and container;
* **writes** the digest into the referenced Deployment's template, and gates
  on the Rollout's verdict as for any Rollout; rollback is Argo's abort plus
  the previous digest restored in the Deployment's template.

The Deployment is read from the Rollout's own namespace only (a workloadRef
has no namespace field; one given is refused). It must be ``apps/v1``
``Deployment``, exist, and consent: carry the annotation
``imagepatch.dev/rollout`` naming the Rollout. A Rollout's annotations are
its owner's request; the Deployment's annotation is its owner's consent, and
what the shipped admission policy checks before it lets the operator write a
Deployment that is not itself opted in. Anything else is a *problem* the
resolved body carries (:func:`problem`): detection reports the Rollout
``Unknown`` with reason ``WorkloadRefUnresolved`` naming the Deployment, and
nothing is written.

Pure: plain dicts as the API serves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagepatch.model.names import ROLLOUT_REF_ANNOTATION

# Where a resolved Rollout body keeps what imagepatch learnt of its workloadRef:
# {"deployment": name, "resourceVersion" and "generation": the Deployment's as read,
# "problem": why it cannot be followed, or ""}. Set by the adapter; never in an API object.
RESOLVED = "imagepatchWorkloadRef"


def reference(rollout: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Rollout's ``spec.workloadRef``, or None when it keeps its own template."""
    ref = _mapping(rollout.get("spec")).get("workloadRef")
    return ref if isinstance(ref, Mapping) else None


def deployment_name(rollout: Mapping[str, Any]) -> str:
    """The name of the Deployment to read, or "" when the reference names none imagepatch
    follows (another kind or apiVersion, another namespace, no name)."""
    ref = reference(rollout)
    if ref is None or _unsupported(ref):
        return ""
    return str(ref["name"])


def resolve(rollout: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Rollout with the referenced Deployment's pod template, and the ``RESOLVED`` record.

    ``deployment`` is the Deployment :func:`deployment_name` names, read from
    the Rollout's namespace (None: it does not exist). A Rollout without a
    workloadRef comes back unchanged (a copy).
    """
    ref = reference(rollout)
    if ref is None:
        return dict(rollout)
    why = _problem(rollout, ref, deployment)
    spec = dict(_mapping(rollout.get("spec")))
    theirs = _mapping(_mapping(deployment).get("spec"))
    spec["template"] = {} if why else theirs.get("template") or {}
    if not why and not spec.get("selector"):  # as Argo: the Deployment's selector then
        spec["selector"] = theirs.get("selector") or {}
    meta = _mapping(_mapping(deployment).get("metadata"))
    return {
        **rollout,
        "spec": spec,
        RESOLVED: {
            "deployment": str(ref.get("name") or ""),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
            # What Argo reports in status.workloadObservedGeneration once it saw this template.
            "generation": str(meta.get("generation") or ""),
            "problem": why,
        },
    }


def problem(body: Mapping[str, Any]) -> str:
    """Why the resolved Rollout's workloadRef cannot be followed, or "" (also for any
    body that is not a resolved Rollout)."""
    return str(_mapping(body.get(RESOLVED)).get("problem") or "")


def resolved(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``RESOLVED`` record of a Rollout read through its workloadRef, else None."""
    record = body.get(RESOLVED)
    return record if isinstance(record, Mapping) else None


def _problem(
    rollout: Mapping[str, Any], ref: Mapping[str, Any], deployment: Mapping[str, Any] | None
) -> str:
    meta = _mapping(rollout.get("metadata"))
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    who = f"Rollout {ns}/{name} references"
    if why := _unsupported(ref):
        return f"{who} {why} through spec.workloadRef; imagepatch follows only an apps/v1" \
            " Deployment of the Rollout's own namespace"
    target = f"Deployment {ns}/{ref['name']}"
    if deployment is None:
        return f"{who} {target} through spec.workloadRef, and it does not exist"
    consent = _mapping(_mapping(deployment.get("metadata")).get("annotations")).get(
        ROLLOUT_REF_ANNOTATION
    )
    if consent != name:
        return (
            f"{who} {target} through spec.workloadRef, and the Deployment does not carry the"
            f" annotation {ROLLOUT_REF_ANNOTATION}: {name} (its owner's consent that imagepatch"
            " writes its template)"
        )
    return ""


def _unsupported(ref: Mapping[str, Any]) -> str:
    """What the reference names when it is not a Deployment imagepatch follows, else ""."""
    kind, api = ref.get("kind"), ref.get("apiVersion")
    name = ref.get("name")
    if kind != "Deployment" or api != "apps/v1":
        return f"{_text(kind)} {_text(api)} {_text(name)}"
    if ref.get("namespace") not in (None, ""):
        return f"a Deployment of namespace {_text(ref.get('namespace'))}"
    if not isinstance(name, str) or not name:
        return "a Deployment without a name"
    return ""


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 253 else text[:250] + "..."


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
