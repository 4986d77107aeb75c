"""Prometheus metrics: what imagepatch knows, where Prometheus users look.

One registry per process, served on ``--metrics-port`` at ``/metrics``.
Detection and the rollout loop update the gauges and histograms here from
the same records they write to status, so metrics, conditions and the report
never disagree. Registry request counts come from the registry client's own
counters through a collector, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

WORKLOADS = Gauge(
    "imagepatch_workloads",
    "Opted-in workloads by policy and compliance state.",
    ["policy", "state"],
    registry=REGISTRY,
)
FINDINGS = Gauge(
    "imagepatch_findings_over_baseline",
    "Findings over the baseline in running images, by policy and severity.",
    ["policy", "severity"],
    registry=REGISTRY,
)
EXPOSURE = Gauge(
    "imagepatch_oldest_unpatched_seconds",
    "Age of the oldest non-compliant state among a policy's workloads (exposure time).",
    ["policy"],
    registry=REGISTRY,
)
# When each policy's detection pass last finished: the "operator not
# reconciling" alert fires when it stops moving (a zombie operator whose watch
# died still answers its liveness probe: nolar/kopf#787).
LAST_PASS = Gauge(
    "imagepatch_last_pass_timestamp_seconds",
    "Unix time of the end of each policy's last detection pass.",
    ["policy"],
    registry=REGISTRY,
)
# Completed passes of the detection loop and reconciles of ImagePatches: how
# much work the operator does (a rate), and the signal tests wait on instead
# of a fixed sleep before asserting that nothing happened.
DETECTION_PASSES = Counter(
    "imagepatch_detection_passes_total",
    "Completed passes of the detection loop (each looks at every policy that is due).",
    registry=REGISTRY,
)
PATCH_RECONCILES = Counter(
    "imagepatch_patch_reconciles_total",
    "Reconciles of ImagePatches by their loops.",
    registry=REGISTRY,
)
PATCHES = Gauge(
    "imagepatch_patches",
    "ImagePatches by policy and phase.",
    ["policy", "phase"],
    registry=REGISTRY,
)
PATCH_RESULTS = Counter(
    "imagepatch_patch_results_total",
    "ImagePatches that ended, by result.",
    ["result"],
    registry=REGISTRY,
)
DURATIONS = Histogram(
    "imagepatch_step_duration_seconds",
    "Durations of builds, rollouts and rollbacks.",
    ["step"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    registry=REGISTRY,
)
AWS_ERRORS = Counter(
    "imagepatch_aws_errors_total",
    "AWS calls that failed after retries, by reason.",
    ["reason"],
    registry=REGISTRY,
)
# Background tasks (detection, policy resync, queue consumer, patch loops)
# restarted by the supervisor after an unexpected exception.
TASK_RESTARTS = Counter(
    "imagepatch_task_restarts_total",
    "Background tasks restarted after an unexpected exception, by task.",
    ["task"],
    registry=REGISTRY,
)
# Notifications (adapters/notify/): each delivery to a sink, after its retries.
NOTIFICATIONS = Counter(
    "imagepatch_notifications_total",
    "Notifications by sink type and outcome (sent, failed after retries, dropped: queue full).",
    ["sink_type", "outcome"],
    registry=REGISTRY,
)

_SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
_phase_seen: dict[str, set[str]] = {}


class _RegistryRequests:
    """Registry requests and errors, read from the client's RequestStats at scrape time."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats

    def collect(self) -> Iterable[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "imagepatch_registry_requests", "Registry requests made.", labels=["host", "operation"]
        )
        for (host, op), n in dict(self.stats.requests).items():
            requests.add_metric([host, op], n)
        yield requests
        errors = CounterMetricFamily(
            "imagepatch_registry_errors", "Registry request failures.", labels=["host", "reason"]
        )
        for (host, reason), n in dict(self.stats.errors).items():
            errors.add_metric([host, reason], n)
        yield errors


_BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}


class _RegistryBreakers:
    """Each registry host's circuit breaker state, read from the client's gate at scrape
    time. Hosts unused for a while are pruned there, so the series follow the hosts in use."""

    def __init__(self, gate: Any) -> None:
        self.gate = gate

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "imagepatch_registry_breaker_state",
            "Circuit breaker of each registry host in use: 0 closed, 1 half-open, 2 open.",
            labels=["host"],
        )
        for host, state in sorted(self.gate.states().items()):
            family.add_metric([host], _BREAKER_VALUES.get(str(state), 0))
        yield family


def serve(
    port: int, *, registry_stats: Any | None = None, registry_gate: Any | None = None
) -> None:
    if registry_stats is not None:
        REGISTRY.register(_RegistryRequests(registry_stats))
    if registry_gate is not None:
        REGISTRY.register(_RegistryBreakers(registry_gate))
    start_http_server(port, registry=REGISTRY)


def record_policy(
    policy: str,
    counts: Mapping[str, int],
    findings: Mapping[str, int],
    oldest_seconds: float | None,
) -> None:
    """One policy's detection results (status.workloads counts, findings, exposure)."""
    for state, n in counts.items():
        if state != "total":
            WORKLOADS.labels(policy=policy, state=state).set(n)
    for severity in _SEVERITIES:
        FINDINGS.labels(policy=policy, severity=severity).set(findings.get(severity, 0))
    EXPOSURE.labels(policy=policy).set(oldest_seconds or 0)
    LAST_PASS.labels(policy=policy).set_to_current_time()


def record_patches(patches: Iterable[Mapping[str, Any]]) -> None:
    """ImagePatches by policy and phase, from the objects as they are."""
    counts: dict[tuple[str, str], int] = {}
    for p in patches:
        key = (
            (p.get("spec") or {}).get("policy", ""),
            (p.get("status") or {}).get("phase") or "Pending",
        )
        counts[key] = counts.get(key, 0) + 1
    for (policy, phase), n in counts.items():
        PATCHES.labels(policy=policy, phase=phase).set(n)
        _phase_seen.setdefault(policy, set()).add(phase)
    with_patches = {policy for policy, _ in counts}
    for policy, phases in list(_phase_seen.items()):
        if policy not in with_patches:
            # No ImagePatch names it any more: its series go, not stay at 0 for good.
            for phase in phases:
                _remove(PATCHES, policy, phase)
            del _phase_seen[policy]
            continue
        for phase in phases:
            if (policy, phase) not in counts:
                PATCHES.labels(policy=policy, phase=phase).set(0)


def keep_policies(policies: Collection[str]) -> None:
    """Remove the detection series of every policy not in ``policies`` (it was deleted)."""
    for metric in (WORKLOADS, FINDINGS, EXPOSURE, LAST_PASS):
        for family in metric.collect():
            for sample in family.samples:
                if sample.labels.get("policy", "") not in policies:
                    _remove(metric, *sample.labels.values())


def _remove(metric: Gauge, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:  # already gone
        pass


def record_detection_pass() -> None:
    DETECTION_PASSES.inc()


def record_patch_reconcile() -> None:
    PATCH_RECONCILES.inc()


def record_task_restart(task: str) -> None:
    TASK_RESTARTS.labels(task=task).inc()


def record_result(result: str) -> None:
    PATCH_RESULTS.labels(result=result).inc()


def record_duration(step: str, seconds: float) -> None:
    DURATIONS.labels(step=step).observe(max(seconds, 0.0))


# -- nodes (adapters.nodes: the AMI survey) --------------------------------------------

NODES = Gauge(
    "imagepatch_nodes",
    "Nodes by AMI currency (Current, Outdated, Unknown), as of the last node survey.",
    ["state"],
    registry=REGISTRY,
)
NODE_OLDEST_AMI = Gauge(
    "imagepatch_node_oldest_ami_age_days",
    "Days since the oldest AMI a node runs was created (0 when no AMI's date is known).",
    registry=REGISTRY,
)
NODE_SURVEYS = Counter(
    "imagepatch_node_surveys_total",
    "Completed node AMI surveys.",
    registry=REGISTRY,
)


def set_nodes(counts: Mapping[str, int], oldest_days: float | None) -> None:
    """The last node survey's figures."""
    for state, n in counts.items():
        NODES.labels(state=state).set(n)
    NODE_OLDEST_AMI.set(oldest_days or 0)
    NODE_SURVEYS.inc()


# -- AWS Config (adapters.awsconfig) ---------------------------------------------------

CONFIG_EVALUATIONS = Counter(
    "imagepatch_config_evaluations_total",
    "Workload evaluations AWS Config accepted, by compliance type (sent only on change).",
    ["compliance"],
    registry=REGISTRY,
)
def record_notification(sink_type: str, outcome: str) -> None:
    NOTIFICATIONS.labels(sink_type=sink_type, outcome=outcome).inc()
