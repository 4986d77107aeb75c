"""What the operator called, from the API server's audit log, against what its RBAC grants.

The local control plane (``tests/cluster/harness.py``) audits every request of
the operator's ServiceAccount at Metadata level. Each line of that log is one
audit event; ``calls`` turns them into the set of :class:`Call` (API group,
resource, subresource, verb, namespace) the operator made. ``grants`` reads the
RBAC documents of ``deploy/rbac.yaml`` bound to that ServiceAccount into
:class:`Grant` (one per API group, resource, verb and namespace, ``None`` for
a ClusterRole). ``covers`` decides whether a grant allows a call, as the RBAC
authorizer would for these rules (no wildcards, no resourceNames: the shipped
rules use neither, and ``grants`` refuses them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

OPERATOR_USER = "system:serviceaccount:imagepatch-system:imagepatch"


@dataclass(frozen=True, order=True)
class Call:
    group: str
    resource: str  # "deployments", or "imagepatches/status" with a subresource
    verb: str
    namespace: str | None  # None: a cluster-scoped object, or a request across all namespaces


@dataclass(frozen=True, order=True)
class Grant:
    group: str
    resource: str
    verb: str
    namespace: str | None  # None: granted cluster-wide (ClusterRole)

    def covers(self, call: Call) -> bool:
        return ((self.group, self.resource, self.verb) == (call.group, call.resource, call.verb)
                and (self.namespace is None or self.namespace == call.namespace))


def calls(lines: Iterable[str], *, user: str = OPERATOR_USER) -> set[Call]:
    """The resource requests ``user`` made (non-resource URLs such as /apis are skipped)."""
    seen: set[str] = set()
    out: set[Call] = set()
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        # A watch is logged when its response starts and again when it ends.
        if event.get("auditID") in seen or (event.get("user") or {}).get("username") != user:
            continue
        seen.add(event.get("auditID"))
        ref = event.get("objectRef")
        if not ref:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add(Call(ref.get("apiGroup", ""), resource, event["verb"], ref.get("namespace")))
    return out


def read_calls(path: Path, *, offset: int = 0) -> set[Call]:
    """The calls logged in ``path`` after byte ``offset`` (where a test started)."""
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode()
    return calls(text.splitlines())


def grants(docs: Iterable[dict], *, service_account: tuple[str, str]) -> set[Grant]:
    """Every (group, resource, verb, namespace) the roles bound to ``service_account`` grant."""
    docs = [d for d in docs if d]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    sa_ns, sa_name = service_account
    out: set[Grant] = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa_name and s.get("namespace") == sa_ns
                   for s in binding.get("subjects") or ()):
            continue
        where = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], where if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            if rule.get("resourceNames") or "*" in (rule["verbs"] + rule["resources"] + rule["apiGroups"]):
                raise ValueError(f"{role['metadata']['name']}: wildcards and resourceNames are not modelled")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add(Grant(group, resource, verb, where))
    return out


def load_grants(path: Path, *, service_account: tuple[str, str]) -> set[Grant]:
    return grants(yaml.safe_load_all(path.read_text()), service_account=service_account)


def uncovered(used: Iterable[Call], granted: Iterable[Grant]) -> list[Call]:
    """Calls no grant allows: a permission the operator needs but RBAC lacks."""
    granted = list(granted)
    return sorted((c for c in used if not any(g.covers(c) for g in granted)), key=_order)


def unused(granted: Iterable[Grant], used: Iterable[Call]) -> list[Grant]:
    """Grants no call needed: a permission to remove (or to explain)."""
    used = list(used)
    return sorted((g for g in granted if not any(g.covers(c) for c in used)), key=_order)


def _order(item: Grant | Call) -> tuple[str, str, str, str]:
    # A cluster-wide entry has no namespace (None), which does not sort with names.
    return (item.group, item.resource, item.verb, item.namespace or "")
