"""The chart's observability pieces: dashboard, alerts, monitors, Security Hub values.

* The Grafana dashboard ConfigMap carries the sidecar label; its JSON is valid
  and every metric it queries is one the operator exports (names read from
  ``operator/imagepatch/adapters/metrics.py``, with the suffixes Prometheus
  adds: ``_total`` for counters, ``_bucket``/``_sum``/``_count`` for
  histograms).
* The PrometheusRule's groups pass Debian's ``promtool check rules``, alert on
  what the issue asks for, and query only exported metrics too.
* The PodMonitor toggle and the Security Hub values render to the right
  objects and flags.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.test_packaging import REPO, Helm, one

METRICS_SOURCE = REPO / "operator" / "imagepatch" / "adapters" / "metrics.py"
SUFFIXES = {
    "Gauge": ("",),
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
}
# PromQL functions and keywords that look like metric names to a regex.
NAME = re.compile(r"\b(imagepatch_[a-z_]+)\b")


def exported_metrics() -> set[str]:
    """Every series name the operator exposes, from the metric constructors in metrics.py."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(METRICS_SOURCE.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = node.func.id
        if kind in SUFFIXES and node.args and isinstance(node.args[0], ast.Constant):
            base = str(node.args[0].value).removesuffix("_total")
            if kind == "Gauge":
                names.add(base)
            else:
                names.update(base + s for s in SUFFIXES[kind])
    return names


def test_exported_metrics_are_read_from_the_source() -> None:
    names = exported_metrics()
    assert {"imagepatch_workloads", "imagepatch_patch_results_total",
            "imagepatch_registry_errors_total", "imagepatch_step_duration_seconds_bucket",
            "imagepatch_last_pass_timestamp_seconds"} <= names
    assert "imagepatch_registry_errors" not in names, "counters are exposed with _total"


def queried(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in NAME.findall(e)}


@pytest.fixture
def values(tmp_path: Path):
    def write(data: dict) -> Path:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(data))
        return path
    return write


def test_grafana_dashboard_is_valid_and_queries_only_exported_metrics(helm: Helm, values) -> None:
    assert not [d for d in helm.template() if d["kind"] == "ConfigMap"], "off by default"
    docs = helm.template(values=values({"grafanaDashboard": {"enabled": True, "folder": "Platform"}}))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Platform"
    dashboard = json.loads(cm["data"]["imagepatch.json"])
    assert dashboard["uid"] and dashboard["title"] == "imagepatch"

    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert exprs and all(e.strip() for e in exprs)
    unknown = queried(exprs) - exported_metrics()
    assert not unknown, f"the dashboard queries metrics the operator does not export: {unknown}"
    # What the issue asks the dashboard to show.
    for metric in ("imagepatch_workloads", "imagepatch_oldest_unpatched_seconds", "imagepatch_patches",
                   "imagepatch_patch_results_total", "imagepatch_registry_errors_total",
                   "imagepatch_aws_errors_total"):
        assert metric in queried(exprs), metric
    assert any("RolledBack" in e or 'step="rollback"' in e for e in exprs), "rollbacks"
    # Panels do not overlap on Grafana's 24-column grid.
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']} overlaps another"
        cells |= mine


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: .ci/setup installs Debian's `prometheus` package")
    return path


def test_prometheus_rule_passes_promtool_and_alerts_on_what_matters(helm: Helm, values, tmp_path: Path) -> None:
    on = {"metrics": {"enabled": True}, "prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}
    docs = helm.template(values=values(on))
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    groups = rule["spec"]["groups"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    res = subprocess.run([promtool(), "check", "rules", str(rules_file)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"promtool check rules failed:\n{res.stdout}\n{res.stderr}"
    assert "SUCCESS" in res.stdout

    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {"ImagePatchWorkloadExposedTooLong", "ImagePatchFailedOrRolledBack",
            "ImagePatchOperatorNotReconciling", "ImagePatchRegistryErrors"} <= set(alerts)
    assert "> 604800" in alerts["ImagePatchWorkloadExposedTooLong"]["expr"]
    unknown = queried([r["expr"] for r in alerts.values()]) - exported_metrics()
    assert not unknown, f"the alerts query metrics the operator does not export: {unknown}"

    # promtool catches a broken expression (so this test can fail).
    broken = copy_with_expr(groups, "ImagePatchRegistryErrors", "sum by (host (rate(x[5m]))")
    rules_file.write_text(yaml.safe_dump({"groups": broken}))
    res = subprocess.run([promtool(), "check", "rules", str(rules_file)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0


def copy_with_expr(groups: list[dict], alert: str, expr: str) -> list[dict]:
    out = json.loads(json.dumps(groups))
    for g in out:
        for r in g["rules"]:
            if r.get("alert") == alert:
                r["expr"] = expr
    return out


def test_prometheus_rule_and_pod_monitor_need_metrics(helm: Helm, values) -> None:
    for bad, message in (({"prometheusRule": {"enabled": True}}, "prometheusRule.enabled needs metrics.enabled"),
                         ({"metrics": {"podMonitor": {"enabled": True}}}, "metrics.podMonitor.enabled needs metrics.enabled")):
        res = helm.run("template", "imagepatch", str(REPO / "charts" / "imagepatch"),
                       "--values", str(values(bad)), check=False)
        assert res.returncode != 0 and message in res.stderr, res.stderr


def test_pod_monitor_selects_the_operator_pod(helm: Helm, values) -> None:
    docs = helm.template(values=values({"metrics": {"enabled": True, "podMonitor": {"enabled": True}}}))
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]


def test_security_hub_values_set_the_flags(helm: Helm, values) -> None:
    docs = helm.template(values=values({"securityHub": {"enabled": True, "clusterName": "prod-eu"}}))
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--securityhub" in args and args[args.index("--cluster-name") + 1] == "prod-eu"
    assert "--securityhub" not in one(helm.template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]

    res = helm.run("template", "imagepatch", str(REPO / "charts" / "imagepatch"),
                   "--values", str(values({"securityHub": {"enabled": True}})), check=False)
    assert res.returncode != 0 and "securityHub.clusterName is required" in res.stderr
