"""Report each opted-in workload's compliance to AWS Config as a custom rule's evaluations.

What each evaluation says and which are sent is ``core/awsconfig.py``'s;
this module sends them with ``config:PutEvaluations`` after each policy's
detection pass (:meth:`ConfigEvaluations.export`, the same hook as Security
Hub's exporter, through ``reconcile/exporters.py``):

* **Only on change.** What was sent is kept in memory (resource id →
  ``Sent``); an unchanged evaluation is not sent again. After a restart
  everything is sent once more: Config keeps one evaluation per rule and
  resource, so a repeat overwrites, it never duplicates.
* **Batched**, at most 100 evaluations a call (the API's limit). An
  evaluation Config returns in ``FailedEvaluations`` is logged, counted and
  left out of what was sent, so the next pass sends it again. A call that
  fails as a whole stops the export: what went before it is remembered, the
  rest is sent next time, and the classified error is raised.
* **ResultToken** and **TestMode** are the admin's (docs/aws.md, "AWS
  Config"): the token associates the evaluations with the custom rule; with
  ``TestMode`` Config checks the call and records nothing.

Errors are classified by ``adapters/aws.py``. boto3 blocks, so each call
runs in a worker thread; exports are serialised. IAM:
``config:PutEvaluations`` (the ``Config*`` statement of docs/iam-policy.json).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

import boto3

from imagepatch.adapters import metrics
from imagepatch.adapters.aws import DEFAULT_MAX_ATTEMPTS, classified, client_config
from imagepatch.core import awsconfig as core

__all__ = ["ConfigEvaluations"]

log = logging.getLogger("imagepatch.awsconfig")


class ConfigEvaluations:
    """Sends changed workload evaluations to one custom AWS Config rule."""

    def __init__(
        self, *, cluster_name: str, result_token: str, region: str | None = None,
        resource_type: str = core.DEFAULT_RESOURCE_TYPE, test_mode: bool = False,
        session: boto3.Session | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.cluster_name = cluster_name
        self.result_token = result_token
        self.region = region
        self.resource_type = resource_type
        self.test_mode = test_mode
        self.sent: dict[str, core.Sent] = {}
        self._session = session
        self._config = client_config(max_attempts)
        self._client_made: Any = None
        self._lock = threading.Lock()
        self._export_lock = asyncio.Lock()

    def _client(self, service: Literal["config"]) -> Any:
        with self._lock:
            if self._client_made is None:
                with classified(f"{service}:CreateClient", "AWS Config", self.region):
                    if self._session is None:
                        self._session = boto3.Session()
                    self._client_made = self._session.client(
                        service, region_name=self.region, config=self._config)
            return self._client_made

    @property
    def config(self) -> Any:
        """The AWS Config client (made on first use)."""
        return self._client("config")

    def _send(self, policy: str, batch: list[core.Evaluation], at: dt.datetime) -> int:
        """One ``PutEvaluations`` call; remember what Config accepted. Returns how many."""
        with classified("config:PutEvaluations", f"{len(batch)} evaluations", self.region):
            answer = self.config.put_evaluations(
                Evaluations=[ev.request(self.resource_type, at) for ev in batch],
                ResultToken=self.result_token, TestMode=self.test_mode)
        failed = {str(f.get("ComplianceResourceId") or "")
                  for f in answer.get("FailedEvaluations") or []}
        for rid in sorted(failed):
            log.warning("AWS Config refused the evaluation of %s; it is sent again next pass", rid)
        accepted = 0
        for ev in batch:
            if ev.resource_id in failed:
                continue
            accepted += 1
            self.sent[ev.resource_id] = core.Sent(
                policy=policy, compliance=ev.compliance, annotation=ev.annotation)
            metrics.CONFIG_EVALUATIONS.labels(compliance=ev.compliance).inc()
        return accepted

    async def export(
        self,
        results_by_policy: Mapping[str, Iterable[core.WorkloadLike]],
        *,
        now: dt.datetime,
        opted_out: Collection[tuple[str, str, str]] = (),
    ) -> int:
        """Send each policy's changed evaluations; the number Config accepted."""
        async with self._export_lock:
            accepted = 0
            for policy, results in results_by_policy.items():
                planned = core.plan(cluster=self.cluster_name, policy=policy, results=results,
                                    sent=self.sent, opted_out=opted_out)
                for batch in core.batches(planned):
                    accepted += await asyncio.to_thread(self._send, policy, batch, now)
            if accepted:
                log.info("AWS Config: %d evaluations sent%s", accepted,
                         " (TestMode: not recorded)" if self.test_mode else "")
            return accepted
