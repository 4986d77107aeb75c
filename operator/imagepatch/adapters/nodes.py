"""Survey the nodes' AMIs against AWS's recommended ones, and record the result.

What each node's verdict is, and why, is ``core/nodes.py``'s; this module
gathers the facts and writes the outcome. One survey (:meth:`NodeSurvey.survey`):

1. one LIST of Nodes (cluster-scoped; RBAC ``nodes: list``);
2. one ``ec2:DescribeInstances`` for all instances, filtered by
   ``instance-id`` (a filter, not ``InstanceIds``: an id EC2 no longer knows
   must not fail the whole call), paginated, in chunks of 200 ids;
3. one ``ec2:DescribeImages`` for the AMIs they run (again by filter: a
   deregistered AMI is simply absent), for names and creation dates;
4. ``ssm:GetParameters`` for the distinct (version, family, arch) parameters,
   10 names a call (the API's limit); a name SSM does not have comes back in
   ``InvalidParameters`` and the node is ``Unknown`` (``ParameterMissing``);
5. one ``ec2:DescribeImages`` for the recommended AMIs not already described.

The survey is recorded as JSON in the ConfigMap ``imagepatch-nodes`` in the
operator's namespace (where tenants cannot write; the operator's Role
already may list, create and patch ConfigMaps there), which ``imagepatch
report`` reads, and as Prometheus gauges (nodes by state, the oldest running
AMI's age). :meth:`NodeSurvey.run` repeats it every ``interval`` (6 h by
default: AWS publishes new EKS AMIs every week or two). A failed survey is
logged and tried again after ``retry`` seconds; the last record stays.

Errors are classified by ``adapters/aws.py``. boto3 blocks, so the AWS calls
run in a worker thread. IAM: ``ec2:DescribeInstances``, ``ec2:DescribeImages``
(Resource ``*``: EC2 cannot scope them) and ``ssm:GetParameters`` on the
public parameters (docs/iam-policy.json, ``Nodes*`` statements).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import boto3

from imagepatch.adapters import metrics
from imagepatch.adapters.aws import DEFAULT_MAX_ATTEMPTS, classified, client_config
from imagepatch.adapters.errors import AdapterError, ConflictError
from imagepatch.adapters.kube import Kube
from imagepatch.core import nodes as core
from imagepatch.model.times import parse_time

__all__ = ["CONFIGMAP", "DATA_KEY", "DEFAULT_INTERVAL", "NodeSurvey"]

log = logging.getLogger("imagepatch.nodes")

CONFIGMAP = core.SURVEY_CONFIGMAP
DATA_KEY = core.SURVEY_DATA_KEY
DEFAULT_INTERVAL = 6 * 3600.0
DEFAULT_RETRY = 300.0
_FILTER_CHUNK = 200  # values in one EC2 filter
_PARAMETERS_PER_CALL = 10  # GetParameters' limit


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class NodeSurvey:
    """Node AMI currency, surveyed every ``interval`` seconds by the leader."""

    def __init__(
        self, kube: Kube, *, namespace: str, region: str | None = None,
        parameter_root: str = core.DEFAULT_PARAMETER_ROOT,
        interval: float = DEFAULT_INTERVAL, retry: float = DEFAULT_RETRY,
        session: boto3.Session | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.region = region
        self.parameter_root = parameter_root
        self.interval = interval
        self.retry = min(retry, interval)
        self._session = session
        self._config = client_config(max_attempts)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._version = ""  # the ConfigMap's resourceVersion, "" until read or created

    # -- AWS ------------------------------------------------------------------------------

    def _client(self, service: Literal["ec2", "ssm"]) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                with classified(f"{service}:CreateClient", "the node survey", self.region):
                    if self._session is None:
                        self._session = boto3.Session()
                    client = self._session.client(service, region_name=self.region,
                                                  config=self._config)
                self._clients[service] = client
            return client

    @property
    def ec2(self) -> Any:
        """The EC2 client (made on first use)."""
        return self._client("ec2")

    @property
    def ssm(self) -> Any:
        """The SSM client (made on first use)."""
        return self._client("ssm")

    def instance_amis(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """Instance id -> the AMI it runs, for the instances EC2 knows."""
        out: dict[str, str] = {}
        for chunk in _chunks(sorted(set(instance_ids)), _FILTER_CHUNK):
            with classified("ec2:DescribeInstances", f"{len(chunk)} instances", self.region):
                pages = self.ec2.get_paginator("describe_instances").paginate(
                    Filters=[{"Name": "instance-id", "Values": list(chunk)}])
                for page in pages:
                    for reservation in page.get("Reservations") or []:
                        for instance in reservation.get("Instances") or []:
                            out[instance["InstanceId"]] = str(instance.get("ImageId") or "")
        return out

    def images(self, image_ids: Iterable[str]) -> dict[str, core.AmiFacts]:
        """AMI id -> its name and creation date, for the AMIs EC2 still describes."""
        out: dict[str, core.AmiFacts] = {}
        for chunk in _chunks(sorted({i for i in image_ids if i}), _FILTER_CHUNK):
            with classified("ec2:DescribeImages", f"{len(chunk)} AMIs", self.region):
                answer = self.ec2.describe_images(
                    Filters=[{"Name": "image-id", "Values": list(chunk)}])
            for image in answer.get("Images") or []:
                created = image.get("CreationDate")
                out[image["ImageId"]] = core.AmiFacts(
                    image_id=image["ImageId"], name=str(image.get("Name") or ""),
                    created=parse_time(created) if created else None)
        return out

    def parameters(self, names: Iterable[str]) -> dict[str, str]:
        """Parameter name -> value, for the names SSM has."""
        out: dict[str, str] = {}
        for chunk in _chunks(sorted(set(names)), _PARAMETERS_PER_CALL):
            with classified("ssm:GetParameters", f"{len(chunk)} parameters", self.region):
                answer = self.ssm.get_parameters(Names=list(chunk))
            for parameter in answer.get("Parameters") or []:
                out[parameter["Name"]] = str(parameter.get("Value") or "")
        return out

    def verdicts(self, facts: Sequence[core.NodeFacts]) -> list[core.NodeVerdict]:
        """The AWS half of a survey: every node's verdict (blocking; run it in a thread)."""
        ids = [f.instance_id for f in facts if f.instance_id]
        amis = self.instance_amis(ids) if ids else {}
        running = self.images(amis.values()) if amis else {}
        wanted = set()
        for f in facts:
            name = core.wanted_parameter(f, amis, running, self.parameter_root)
            if name:
                wanted.add(name)
        recommended = self.parameters(wanted) if wanted else {}
        missing = [i for i in recommended.values() if i not in running]
        images = {**running, **(self.images(missing) if missing else {})}
        return [
            core.verdict(
                f, instance_ami=amis.get(f.instance_id or ""),
                running=running.get(amis.get(f.instance_id or "", "")),
                parameter_root=self.parameter_root, recommended=recommended, images=images,
            )
            for f in facts
        ]

    # -- one survey, and the loop -----------------------------------------------------------

    async def survey(self, now: dt.datetime | None = None) -> list[core.NodeVerdict]:
        """Survey every node now: record the result and set the gauges."""
        now = now or dt.datetime.now(dt.UTC)
        facts = [core.node_facts(node) for node in await self.kube.list_nodes()]
        verdicts = await asyncio.to_thread(self.verdicts, facts)
        await self.record(core.survey_record(verdicts, now))
        metrics.set_nodes(core.state_counts(verdicts), core.oldest_ami_age_days(verdicts, now))
        counts = core.state_counts(verdicts)
        log.info("node survey: %s", ", ".join(f"{n} {s}" for s, n in counts.items()))
        return verdicts

    async def record(self, record: Mapping[str, Any]) -> None:
        """Write the survey to the ConfigMap (created when first needed)."""
        data = {DATA_KEY: json.dumps(record, sort_keys=True)}
        for _ in range(3):
            if not self._version:
                found = await self.kube.list_configmaps(
                    self.namespace, field_selector=f"metadata.name={CONFIGMAP}")
                if found:
                    self._version = str(found[0]["metadata"].get("resourceVersion") or "")
            try:
                if self._version:
                    written = await self.kube.patch_configmap(
                        self.namespace, CONFIGMAP, data, resource_version=self._version)
                else:
                    written = await self.kube.create_configmap(self.namespace, {
                        "metadata": {"name": CONFIGMAP,
                                     "labels": {"app.kubernetes.io/name": "imagepatch"}},
                        "data": data,
                    })
            except ConflictError:
                self._version = ""  # someone else wrote it (or created it): read it again
                continue
            self._version = str(written.get("metadata", {}).get("resourceVersion") or "")
            return
        raise ConflictError(f"ConfigMap {self.namespace}/{CONFIGMAP} kept changing")

    async def run(self, stop: asyncio.Event) -> None:
        """Survey every ``interval`` until ``stop``; a failure is retried after ``retry``."""
        while not stop.is_set():
            wait = self.interval
            try:
                await self.survey()
            except AdapterError as exc:
                log.warning("node survey failed (%s); trying again in %.0fs", exc, self.retry)
                wait = self.retry
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
