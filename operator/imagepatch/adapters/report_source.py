"""Read what ``imagepatch report`` needs from the cluster, with read-only RBAC.

``read_inputs`` lists ImagePatchPolicies, ImagePatches and the opted-in
workloads of the kinds imagepatch patches (Deployments, StatefulSets,
DaemonSets, CronJobs, and Argo Rollouts' Rollouts where Argo's CRD is
installed; in all namespaces, or in one) as plain dicts, exactly
as the API serves them but for ``kind``, which a list's items lack and which
is set on each, for ``core.report``. It only ever uses ``list``, so the
``imagepatch-view`` ClusterRole (``deploy/view-role.yaml``, aggregated into
the built-in ``view``, which already lists all four kinds) is enough.

A namespace user bound to ``view`` by a RoleBinding may not list the
cluster-scoped ImagePatchPolicies and ImagePatches: the report then goes on
with the workloads alone and says so in a warning, instead of failing. The
same for a workload kind a narrower role may not list, as long as one kind
can be listed; when none can, the report fails with the error.

``read_node_survey`` picks the operator's last node AMI survey
(``adapters.nodes``) out of the same list of its namespace's ConfigMaps.

``read_memory`` lists the operator's memory (ConfigMaps in its namespace,
``adapters.memory``) when the reader may: the state annotations on workloads
are mirrors their owners can edit, so the report prefers the operator's
record; a reader who may not list them (``view``) gets the mirrors and a
warning that says so.

``delete_imagepatches`` is the one write here, for history retention: the
operator deletes the ImagePatches ``core.retention.retention`` chose (it needs
``delete``, which the operator's role has and the view role has not).

Requests go through ``adapters.kubeapi``; ``api`` is a ``kubeapi.Client`` or a
``kubernetes`` client (the CLI's, ``api_client``), whose endpoint and
credentials it is given. Errors are classified by ``adapters.kube.classify``,
as everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagepatch.adapters import kubeapi
from imagepatch.adapters.errors import AdapterError, ConfigurationError, NotFoundError
from imagepatch.adapters.kube import (
    CALL_ERRORS,
    DEFAULT_REQUEST_TIMEOUT,
    WORKLOAD_RESOURCES,
    classify,
)
from imagepatch.adapters.kubeapi import CORE, path
from imagepatch.core import kinds, kinds_rollout, reasons
from imagepatch.core.nodes import SURVEY_CONFIGMAP as NODES_CONFIGMAP
from imagepatch.core.nodes import SURVEY_DATA_KEY as NODES_DATA_KEY
from imagepatch.model.memory import MEMORY_LABEL, MEMORY_LABEL_VALUE
from imagepatch.model.names import GROUP, IMAGEPATCHES, POLICIES, POLICY_ANNOTATION, VERSION

if TYPE_CHECKING:
    from kubernetes import client

PAGE_SIZE = 500  # list in chunks: a large cluster's Deployments do not fit one response
# Each call is bounded as the operator's are: a hung API server ends the report with an error.
REQUEST_TIMEOUT = DEFAULT_REQUEST_TIMEOUT


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportInputs:
    policies: list[dict[str, Any]] = field(default_factory=list)
    workloads: list[dict[str, Any]] = field(default_factory=list)  # every kind, each with its kind
    imagepatches: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The operator's memory records (data key -> JSON), or None when not readable.
    memory: dict[str, str] | None = None
    # The operator's last node AMI survey (adapters.nodes), or None (off, or not readable).
    node_survey: dict[str, Any] | None = None


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client for ``kubeconfig`` (default: $KUBECONFIG or ~/.kube/config, as kubectl).

    Inside a pod with no kubeconfig at all, the pod's ServiceAccount is used.
    The ``kubernetes`` client, for the CLI's commands that use it directly
    (``cli_plugin``); never imported by the operator.
    """
    from kubernetes import client, config

    try:
        api: client.ApiClient = config.new_client_from_config(
            config_file=kubeconfig, context=context
        )
        return api
    except config.ConfigException:
        if kubeconfig:
            raise
        config.load_incluster_config()
        return client.ApiClient()


def _list_all(what: str, api: Any, url: str) -> list[dict[str, Any]]:
    """Every item of a list, page by page, as raw dicts."""
    items: list[dict[str, Any]] = []
    try:
        for page in kubeapi.Client.of(api).list_pages(url, limit=PAGE_SIZE,
                                                      timeout=REQUEST_TIMEOUT):
            items += page.get("items") or []
    except CALL_ERRORS as exc:
        raise classify(exc, what) from None
    return items


def _workloads_path(kind: str, namespace: str | None) -> str:
    group, version, plural = WORKLOAD_RESOURCES[kind]
    return path(group, version, plural, namespace=namespace)


def _opted_in_workloads(
    api: Any, namespace: str | None, warnings: list[str]
) -> list[dict[str, Any]]:
    """Opted-in workloads of every kind, each with its ``kind`` (list items carry none)."""
    lists = ((kinds.DEPLOYMENT, "Deployments"), (kinds.STATEFULSET, "StatefulSets"),
             (kinds.DAEMONSET, "DaemonSets"), (kinds.CRONJOB, "CronJobs"))
    where = f"in {namespace}" if namespace else "in all namespaces"
    out: list[dict[str, Any]] = []
    refused: list[ConfigurationError] = []
    for kind, plural in lists:
        what = f"list {plural} {where}"
        try:
            items = _list_all(what, api, _workloads_path(kind, namespace))
        except ConfigurationError as exc:
            if exc.reason != reasons.FORBIDDEN:
                raise
            refused.append(exc)
            warnings.append(f"cannot {what} (forbidden): the report shows none of them")
            continue
        # Opting in is an annotation, and annotations cannot be selected server-side.
        out += [
            {**item, "kind": kind}
            for item in items
            if POLICY_ANNOTATION in ((item.get("metadata") or {}).get("annotations") or {})
        ]
    if len(refused) == len(lists):
        raise refused[0]  # nothing can be listed here: an error, not an empty report
    return out + _opted_in_rollouts(api, namespace, where, warnings)


def _opted_in_rollouts(
    api: Any, namespace: str | None, where: str, warnings: list[str]
) -> list[dict[str, Any]]:
    """Argo Rollouts' opted-in Rollouts, each with its ``kind``: none, and no warning,
    where Argo's CRD is not installed (most clusters)."""
    what = f"list Rollouts {where}"
    try:
        items = _list_all(what, api, _workloads_path(kinds_rollout.ROLLOUT, namespace))
    except NotFoundError:
        return []
    except ConfigurationError as exc:
        if exc.reason != reasons.FORBIDDEN:
            raise
        warnings.append(f"cannot {what} (forbidden): the report shows none of them")
        return []
    return [
        {**item, "kind": kinds_rollout.ROLLOUT}
        for item in items
        if POLICY_ANNOTATION in ((item.get("metadata") or {}).get("annotations") or {})
    ]


def _operator_configmaps(
    api: Any, operator_namespace: str
) -> list[dict[str, Any]] | None:
    """The ConfigMaps of the operator's namespace; None when the reader may not list them."""
    try:
        return _list_all(f"list ConfigMaps in {operator_namespace}", api,
                         path(CORE, "v1", "configmaps", namespace=operator_namespace))
    except ConfigurationError as exc:
        if exc.reason != reasons.FORBIDDEN:
            raise
        return None


def read_node_survey(items: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The node survey the operator recorded (``adapters.nodes``), from its namespace's
    ConfigMaps; None when there is none or it does not parse."""
    for cm in items or []:
        if (cm.get("metadata") or {}).get("name") != NODES_CONFIGMAP:
            continue
        try:
            record = json.loads((cm.get("data") or {}).get(NODES_DATA_KEY) or "")
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    return None


def read_memory(
    api: Any, operator_namespace: str,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, str] | None:
    """The operator's memory records; None when they cannot be listed (a view user) or
    there are none in ``operator_namespace``.

    They are ConfigMaps in the operator's namespace (``adapters.memory``); the
    ``view`` role does not reach that namespace, an admin does. ``items``: that
    namespace's ConfigMaps when already listed.
    """
    if items is None:
        items = _operator_configmaps(api, operator_namespace)
    if items is None:
        return None
    mine = [
        cm for cm in items
        if ((cm.get("metadata") or {}).get("labels") or {}).get(MEMORY_LABEL) == MEMORY_LABEL_VALUE
    ]
    if not mine:
        return None  # no operator keeps its memory there (another --operator-namespace?)
    return {key: value for cm in mine for key, value in (cm.get("data") or {}).items()}


def read_inputs(
    api: Any, *, namespace: str | None = None,
    operator_namespace: str = "imagepatch-system",
) -> ReportInputs:
    """Policies, ImagePatches and opted-in workloads of every kind (of ``namespace``, or
    all), and the operator's memory when readable."""
    api = kubeapi.Client.of(api)
    warnings: list[str] = []
    opted_in = _opted_in_workloads(api, namespace, warnings)
    lists: dict[str, list[dict[str, Any]]] = {}
    for plural, kind in ((POLICIES, "ImagePatchPolicies"),
                         (IMAGEPATCHES, "ImagePatches")):
        try:
            lists[plural] = _list_all(f"list {kind}", api, path(GROUP, VERSION, plural))
        except NotFoundError as exc:
            raise ConfigurationError(
                f"{exc}: are the imagepatch CRDs installed in this cluster?", reason=reasons.NO_CRDS
            ) from None
        except ConfigurationError as exc:
            if exc.reason != reasons.FORBIDDEN:
                raise
            # Cluster-scoped: a user with `view` in one namespace only cannot list them.
            lists[plural] = []
            warnings.append(
                f"cannot list {kind} (forbidden): the report shows no "
                + ("policy status" if plural == POLICIES else "patches or history")
                + "; bind the imagepatch-view (or view) ClusterRole cluster-wide to see them"
            )
    configmaps = _operator_configmaps(api, operator_namespace)
    return ReportInputs(
        policies=lists[POLICIES],
        workloads=opted_in,
        imagepatches=lists[IMAGEPATCHES],
        warnings=warnings,
        memory=read_memory(api, operator_namespace, configmaps),
        node_survey=read_node_survey(configmaps),
    )


def delete_imagepatches(
    api: Any, resource_versions: Mapping[str, str]
) -> list[str]:
    """Delete each named ImagePatch if it is still at the given resourceVersion.

    The precondition means a patch that changed after retention chose it (a
    human reopened it, say) is kept: the next pass decides again. Already gone
    or changed is not an error. Returns the names actually deleted.
    """
    client = kubeapi.Client.of(api)
    deleted = []
    for name, version in sorted(resource_versions.items()):
        body = {"preconditions": {"resourceVersion": version}}
        try:
            client.delete(path(GROUP, VERSION, IMAGEPATCHES, name=name), body,
                          timeout=REQUEST_TIMEOUT)
        except CALL_ERRORS as exc:
            error: AdapterError = classify(exc, f"delete ImagePatch {name}")
            if error.reason in ("NotFound", "Conflict"):
                continue
            raise error from None
        deleted.append(name)
    return deleted
