"""The report's formats: JSON, CSV, an aligned table and one self-contained HTML page.

Entry-point level, beside ``imagepatch.cli_report`` (the ``imagepatch report``
subcommand, which reads the cluster and calls :func:`render`). Everything
here is a pure function of a ``core.report.Report``, with no dependency
beyond the standard library; the JSON document (:func:`report_as_dict`) is
the one every other format is rendered from:

* ``table`` (default): policy summaries, then one aligned line per workload
  (its namespace, kind and name: a StatefulSet and a Deployment of one name
  are two lines);
* ``json``: the document below;
* ``csv``: one line per workload container (a workload with no recorded
  container, e.g. ``NotAdmitted``, gets one line with the container columns
  empty);
* ``html``: one self-contained page (inline CSS, an inline SVG chart, no
  JavaScript, no external URL).

JSON schema (``schemaVersion`` 1; keys are always present, times are RFC 3339
UTC strings or null, durations are whole seconds or null)::

    kind: "ImagePatchReport"
    schemaVersion: 1
    generatedAt: time                      # the "now" every age is measured to
    filters: {namespace: str|null, policy: [str], state: [str]}
    warnings: [str]                        # e.g. ImagePatches not listable with this RBAC
    policies: [{                           # sorted by name
      name, exists: bool,                  # exists=false: workloads name a missing policy
      ready: {status, reason, message}|null,            # the policy's Ready condition
      statusCounts: {total, compliant, baseImageOutdated, vulnerable, untrustedBase,
                     patching, failed}|null,            # status.workloads, as recorded
      reportCounts: {same keys},           # counted over this report's workloads
      openPatches: int, patchesByPhase: {phase: int}}]
    workloads: [{                          # sorted by policy, namespace, name, kind
      namespace, name, kind,               # Deployment|StatefulSet|DaemonSet|CronJob
      policy,
      state, reason, message,              # from the imagepatch.dev/state annotation
      since: time|null,                    # when that state was first recorded
      outOfComplianceSince: time|null, outOfComplianceSeconds: int|null,
      findingsOverBaseline: int|null, findingIds: [str],
      digests: [str],                      # running digest of each container
      containers: [{name, image, repository, digest, digestSource, base, baseDigest,
                    baseCurrent, baseOutdated: bool, baseOutdatedSince: time|null,
                    baseOutdatedSeconds: int|null, state, reason, message,
                    findingsOverBaseline: int|null}],
      lastPatch: {name, phase, reason, at: time|null, result: str,
                  approval: {decision, by, reason}|null}|null}]
    patches: [{                            # the audit trail, sorted by name
      name, policy, image, currentDigest, targetDigest, reason, phase,
      createdAt: time|null, endedAt: time|null,
      approval: {decision, by, reason}|null,
      rollouts: [{kind, namespace, name, container, phase, reason?, message?,
                  startedAt?, finishedAt?}],
      history: [{phase, at, message?, by?}]}]
    history: {unit: "hour"|"day",
              buckets: [{start, end, open, succeeded, rolledBack, failed, closed}]}
    nodes: {                               # null: no node survey was read (off, or no access)
      surveyedAt: time|null,               # when the operator last surveyed the nodes
      counts: {Current: int, Outdated: int, Unknown: int},
      items: [{name, instanceId, nodeGroup, nodePool, kubeletVersion, osImage,
               architecture, family, amiId, amiCreated, recommendedAmiId,
               recommendedCreated, state,      # Current|Outdated|Unknown
               daysBehind: int|null,           # Outdated: recommended AMI's age lead
               reason}]}|null                  # Unknown: why (CamelCase reason: words)

How each value is derived (e.g. what "out of compliance since" and "base
outdated since" mean) is written down in ``imagepatch.core.report``.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from collections.abc import Sequence
from typing import Any

from imagepatch.core.nodes import NodeVerdict, state_counts
from imagepatch.core.report import (
    ContainerRow,
    Report,
    WorkloadRow,
)
from imagepatch.model.imagepatch import TERMINAL_PHASES, ApprovalDecision, Phase
from imagepatch.model.times import format_time

FORMATS = ("table", "json", "csv", "html")

# JSON keys of the history series, per terminal phase.
RESULT_KEYS = {
    str(Phase.SUCCEEDED): "succeeded",
    str(Phase.ROLLED_BACK): "rolledBack",
    str(Phase.FAILED): "failed",
    str(Phase.CLOSED): "closed",
}


def render(report: Report, output: str) -> str:
    """The report in ``output`` format (one of :data:`FORMATS`)."""
    return {"table": render_table, "json": render_json, "csv": render_csv,
            "html": render_html}[output](report)


# --- the JSON document, which every other format is rendered from -------------------------


def format_age(seconds: int | None) -> str:
    """``3d4h``, ``5h12m``, ``42m``, ``30s``; empty for None. Two units at most."""
    if seconds is None:
        return ""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _time_or_none(when: dt.datetime | None) -> str | None:
    return format_time(when) if when is not None else None


def _node(n: NodeVerdict) -> dict[str, Any]:
    return {
        "name": n.name, "instanceId": n.instance_id, "nodeGroup": n.node_group,
        "nodePool": n.node_pool, "kubeletVersion": n.kubelet_version, "osImage": n.os_image,
        "architecture": n.architecture, "family": n.family, "amiId": n.ami_id,
        "amiCreated": n.ami_created or None, "recommendedAmiId": n.recommended_ami_id,
        "recommendedCreated": n.recommended_created or None, "state": n.state,
        "daysBehind": n.days_behind, "reason": n.reason,
    }


def _nodes(report: Report) -> dict[str, Any] | None:
    if report.nodes is None:
        return None
    return {
        "surveyedAt": report.nodes_surveyed_at or None,
        "counts": state_counts(report.nodes),
        "items": [_node(n) for n in report.nodes],
    }


def report_as_dict(report: Report) -> dict[str, Any]:
    """The JSON document (schema in this module's docstring)."""

    def container(c: ContainerRow) -> dict[str, Any]:
        return {
            "name": c.name,
            "image": c.image,
            "repository": c.repository,
            "digest": c.digest,
            "digestSource": c.digest_source,
            "base": c.base,
            "baseDigest": c.base_digest,
            "baseCurrent": c.base_current,
            "baseOutdated": c.base_outdated,
            "baseOutdatedSince": _time_or_none(c.base_outdated_since),
            "baseOutdatedSeconds": c.base_outdated_seconds,
            "state": c.state,
            "reason": c.reason,
            "message": c.message,
            "findingsOverBaseline": c.findings_over_baseline,
        }

    def workload(r: WorkloadRow) -> dict[str, Any]:
        last = None
        if r.last_patch is not None:
            last = {
                "name": r.last_patch.name,
                "phase": r.last_patch.phase,
                "reason": r.last_patch.reason,
                "at": _time_or_none(r.last_patch.at),
                "result": r.last_patch.result,
                "approval": dict(r.last_patch.approval) if r.last_patch.approval else None,
            }
        return {
            "namespace": r.namespace,
            "name": r.name,
            "kind": r.kind,
            "policy": r.policy,
            "state": r.state,
            "reason": r.reason,
            "message": r.message,
            "since": _time_or_none(r.since),
            "outOfComplianceSince": _time_or_none(r.out_of_compliance_since),
            "outOfComplianceSeconds": r.out_of_compliance_seconds,
            "findingsOverBaseline": r.findings_over_baseline,
            "findingIds": list(r.finding_ids),
            "digests": list(r.digests),
            "containers": [container(c) for c in r.containers],
            "lastPatch": last,
        }

    return {
        "kind": "ImagePatchReport",
        "schemaVersion": 1,
        "generatedAt": format_time(report.generated_at),
        "filters": {
            "namespace": report.filters.namespace,
            "policy": sorted(report.filters.policies),
            "state": sorted(report.filters.states),
        },
        "warnings": list(report.warnings),
        "policies": [
            {
                "name": s.name,
                "exists": s.exists,
                "ready": dict(s.ready) if s.ready else None,
                "statusCounts": dict(s.status_counts) if s.status_counts is not None else None,
                "reportCounts": dict(s.report_counts),
                "openPatches": s.open_patches,
                "patchesByPhase": dict(s.patches_by_phase),
            }
            for s in report.policies
        ],
        "workloads": [workload(r) for r in report.workloads],
        "patches": [
            {
                "name": p.name,
                "policy": p.policy,
                "image": p.image,
                "currentDigest": p.current_digest,
                "targetDigest": p.target_digest,
                "reason": p.reason,
                "phase": p.phase,
                "createdAt": _time_or_none(p.created_at),
                "endedAt": _time_or_none(p.ended_at),
                "approval": dict(p.approval) if p.approval else None,
                "rollouts": [dict(r) for r in p.rollouts],
                "history": [dict(h) for h in p.history],
            }
            for p in report.patches
        ],
        "history": {
            "unit": report.history_unit,
            "buckets": [
                {
                    "start": format_time(b.start),
                    "end": format_time(b.end),
                    "open": b.open,
                    **{RESULT_KEYS[k]: v for k, v in b.ended.items()},
                }
                for b in report.history
            ],
        },
        "nodes": _nodes(report),
    }


# --- json, csv ----------------------------------------------------------------------------


def render_json(report: Report) -> str:
    return json.dumps(report_as_dict(report), indent=2) + "\n"


CSV_COLUMNS = (
    "namespace", "kind", "name", "policy", "state", "reason", "since", "outOfComplianceSince",
    "outOfComplianceSeconds", "findingsOverBaseline", "findingIds", "container", "image",
    "digest", "base", "baseDigest", "baseCurrent", "baseOutdated", "baseOutdatedSince",
    "baseOutdatedSeconds", "containerState", "containerReason", "containerFindingsOverBaseline",
    "lastPatch", "lastPatchPhase", "lastPatchAt", "lastPatchResult", "approvedBy", "message",
    # Node rows (kind "Node", after the workloads), from the last node survey.
    "nodeGroup", "instanceId", "amiFamily", "amiId", "recommendedAmiId", "daysBehind",
)


def render_csv(report: Report) -> str:
    doc = report_as_dict(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()

    def cell(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    for w in doc["workloads"]:
        last = w["lastPatch"] or {}
        approval = last.get("approval") or {}
        common = {
            "namespace": w["namespace"], "kind": w["kind"], "name": w["name"],
            "policy": w["policy"],
            "state": w["state"], "reason": w["reason"], "since": w["since"],
            "outOfComplianceSince": w["outOfComplianceSince"],
            "outOfComplianceSeconds": w["outOfComplianceSeconds"],
            "findingsOverBaseline": w["findingsOverBaseline"],
            "findingIds": " ".join(w["findingIds"]),
            "lastPatch": last.get("name"), "lastPatchPhase": last.get("phase"),
            "lastPatchAt": last.get("at"), "lastPatchResult": last.get("result"),
            "approvedBy": (
                approval.get("by") if approval.get("decision") == ApprovalDecision.APPROVED else ""
            ),
            "message": w["message"],
        }
        for c in w["containers"] or [None]:
            row = dict(common)
            if c is not None:
                row.update({
                    "container": c["name"], "image": c["image"], "digest": c["digest"],
                    "base": c["base"], "baseDigest": c["baseDigest"],
                    "baseCurrent": c["baseCurrent"], "baseOutdated": c["baseOutdated"],
                    "baseOutdatedSince": c["baseOutdatedSince"],
                    "baseOutdatedSeconds": c["baseOutdatedSeconds"],
                    "containerState": c["state"], "containerReason": c["reason"],
                    "containerFindingsOverBaseline": c["findingsOverBaseline"],
                })
            writer.writerow({k: cell(row.get(k)) for k in CSV_COLUMNS})
    for n in (doc["nodes"] or {}).get("items", []):
        writer.writerow({k: cell(v) for k, v in {
            "kind": "Node", "name": n["name"], "state": n["state"], "reason": n["reason"],
            "nodeGroup": n["nodeGroup"] or n["nodePool"], "instanceId": n["instanceId"],
            "amiFamily": n["family"], "amiId": n["amiId"],
            "recommendedAmiId": n["recommendedAmiId"], "daysBehind": n["daysBehind"],
        }.items()})
    return out.getvalue()


# --- table --------------------------------------------------------------------------------


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12] if digest else ""


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ) + "\n"


def _age(seconds: int | None) -> str:
    return format_age(seconds) or "-"


def _last_patch(row: WorkloadRow, now: dt.datetime) -> str:
    p = row.last_patch
    if p is None:
        return "-"
    ago = f" {format_age(int((now - p.at).total_seconds()))} ago" if p.at else ""
    return f"{p.name} {p.phase}{ago}"


def render_table(report: Report) -> str:
    now = report.generated_at
    parts = []
    if report.policies:
        headers: tuple[str, ...] = ("POLICY", "READY", "WORKLOADS", "COMPLIANT", "OUTDATED",
                                     "VULNERABLE", "UNTRUSTED", "PATCHING", "FAILED",
                                     "OPEN PATCHES")
        rows: list[tuple[str, ...]] = []
        for s in report.policies:
            c = s.report_counts
            rows.append((
                s.name + ("" if s.exists else " (missing)"),
                (s.ready or {}).get("status", "-") or "-",
                str(c["total"]), str(c["compliant"]), str(c["baseImageOutdated"]),
                str(c["vulnerable"]), str(c["untrustedBase"]), str(c["patching"]),
                str(c["failed"]), str(s.open_patches),
            ))
        parts.append(_aligned(headers, rows))
    headers = ("NAMESPACE", "KIND", "NAME", "POLICY", "STATE", "REASON", "DIGEST", "BASE",
               "BASE OUTDATED", "FINDINGS", "OUT OF COMPLIANCE", "LAST PATCH", "RESULT")
    rows = []
    for r in report.workloads:
        outdated = [c.base_outdated_seconds for c in r.containers if c.base_outdated]
        rows.append((
            r.namespace, r.kind, r.name, r.policy, r.state, r.reason,
            ",".join(_short(d) for d in r.digests) or "-",
            ",".join(sorted({c.base for c in r.containers if c.base})) or "-",
            ("yes " + _age(max((s for s in outdated if s is not None), default=None))).strip()
            if outdated else "no",
            "-" if r.findings_over_baseline is None else str(r.findings_over_baseline),
            _age(r.out_of_compliance_seconds),
            _last_patch(r, now),
            _clip(r.last_patch.result, 50) if r.last_patch and r.last_patch.result else "-",
        ))
    parts.append(_aligned(headers, rows) if rows else "No opted-in workloads match.\n")
    if report.nodes is not None:
        parts.append(_nodes_table(report))
    return "\n".join(parts)


def _nodes_table(report: Report) -> str:
    assert report.nodes is not None
    counts = state_counts(report.nodes)
    head = (f"Nodes (surveyed {report.nodes_surveyed_at or '-'}): "
            + ", ".join(f"{n} {state}" for state, n in counts.items()) + "\n")
    headers = ("NODE", "GROUP", "FAMILY", "VERSION", "AMI", "RECOMMENDED", "STATE", "BEHIND",
               "REASON")
    rows = [(
        n.name, n.node_group or n.node_pool or "-", n.family or "-",
        n.kubelet_version or "-", n.ami_id or "-", n.recommended_ami_id or "-", n.state,
        f"{n.days_behind}d" if n.days_behind is not None else "-", _clip(n.reason, 80) or "-",
    ) for n in report.nodes]
    return head + (_aligned(headers, rows) if rows else "No nodes.\n")


# --- html ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328;
background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#59636e;margin:0 0 16px}
table{border-collapse:collapse;width:100%;margin:0 0 8px}
th,td{border-bottom:1px solid #d1d9e0;padding:5px 8px;text-align:left;vertical-align:top;
overflow-wrap:break-word}
.badge,code,time,td.t{white-space:nowrap}
.sub{color:#59636e;font-size:12px}
#workloads,#patches{font-size:13px}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;background:#59636e}
.s-Compliant,.p-Succeeded{background:#1a7f37}.s-BaseImageOutdated{background:#9a6700}
.s-Vulnerable,.s-Failed,.p-Failed{background:#cf222e}.s-UntrustedBase{background:#8250df}
.s-Patching{background:#0969da}.n-Current{background:#1a7f37}.n-Outdated{background:#9a6700}.p-RolledBack{background:#bc4c00}.p-Closed{background:#818b98}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px;margin:8px 0}
svg text{font:11px system-ui,sans-serif;fill:#59636e}
.bar.succeeded{fill:#1a7f37}.bar.rolledBack{fill:#bc4c00}.bar.failed{fill:#cf222e}
.bar.closed{fill:#818b98}.open-line{fill:none;stroke:#0969da;stroke-width:2}
.open-point{fill:#0969da}.grid{stroke:#d1d9e0}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""

_COLORS = {"succeeded": "#1a7f37", "rolledBack": "#bc4c00", "failed": "#cf222e",
           "closed": "#818b98"}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(iso: str | None) -> str:
    """``2026-11-27 10:00Z``: short enough for a table cell; the JSON keeps seconds."""
    return iso[:16].replace("T", " ") + "Z" if iso else "-"


def _badge(text: str, prefix: str) -> str:
    return f'<span class="badge {prefix}-{_e(text)}">{_e(text)}</span>'


def history_svg(report: Report, *, width: int = 960, height: int = 260) -> str:
    """Stacked bars of ImagePatches ended per bucket by result; a line of open ones.

    One ``<g class="bucket">`` per bucket (its bars: one ``rect.bar`` per
    non-zero result) and one polyline point per bucket.
    """
    buckets = report.history
    left, right, top, bottom = 40, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    if not buckets:
        return (f'<svg class="chart" role="img" width="{width}" height="60" '
                f'viewBox="0 0 {width} 60"><text x="{left}" y="30">No ImagePatches yet.'
                "</text></svg>")
    keys = [RESULT_KEYS[t] for t in TERMINAL_PHASES]
    peak = max(1, *(b.open for b in buckets),
               *(sum(b.ended.values()) for b in buckets))
    step = plot_w / len(buckets)
    bar_w = max(1.0, step * 0.7)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / peak

    out = [f'<svg class="chart" role="img" aria-label="ImagePatches per {report.history_unit}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    ticks = range(peak + 1) if peak <= 5 else sorted({0, peak // 2, peak})
    for tick in ticks:
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                   f'y2="{y(tick):.1f}"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" '
                   f'text-anchor="end">{tick}</text>')
    # Labels must not overlap: about 7px per character of "11-27 14:00" or "11-27".
    label_px = 80 if report.history_unit == "hour" else 45
    label_every = max(1, -(-label_px // max(1, int(step))))
    points = []
    for i, b in enumerate(buckets):
        x = left + i * step + (step - bar_w) / 2
        by_key = {RESULT_KEYS[t]: n for t, n in b.ended.items()}
        out.append(f'<g class="bucket" data-start="{_e(b.start.isoformat())}">')
        base = 0
        for key in keys:
            n = by_key.get(key, 0)
            if not n:
                continue
            out.append(f'<rect class="bar {key}" x="{x:.1f}" y="{y(base + n):.1f}" '
                       f'width="{bar_w:.1f}" height="{y(base) - y(base + n):.1f}">'
                       f"<title>{_e(key)}: {n}</title></rect>")
            base += n
        out.append("</g>")
        points.append((left + i * step + step / 2, y(b.open)))
        if i % label_every == 0:
            fmt = "%m-%d %H:00" if report.history_unit == "hour" else "%m-%d"
            out.append(f'<text x="{left + i * step + step / 2:.1f}" y="{height - 10}" '
                       f'text-anchor="middle">{_e(b.start.strftime(fmt))}</text>')
    out.append('<polyline class="open-line" points="'
               + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
    out += [f'<circle class="open-point" cx="{px:.1f}" cy="{py:.1f}" r="2.5"/>'
            for px, py in points]
    out.append("</svg>")
    return "".join(out)


def render_html(report: Report) -> str:
    doc = report_as_dict(report)
    f = doc["filters"]
    shown = ", ".join(
        part for part in (
            f"namespace {f['namespace']}" if f["namespace"] else "",
            f"policy {', '.join(f['policy'])}" if f["policy"] else "",
            f"state {', '.join(f['state'])}" if f["state"] else "",
        ) if part
    ) or "all opted-in workloads"
    h = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         "<title>imagepatch compliance report</title>",
         f"<style>{_CSS}</style></head><body>",
         "<h1>imagepatch compliance report</h1>",
         f'<p class="meta">Generated {_e(doc["generatedAt"])} · {_e(shown)}</p>']
    h += [f'<div class="warn">{_e(w)}</div>' for w in doc["warnings"]]

    h.append('<h2>Policies</h2><table id="policies"><thead><tr><th>Policy</th><th>Ready</th>'
             "<th>Workloads</th><th>Compliant</th><th>Base outdated</th><th>Vulnerable</th>"
             "<th>Untrusted base</th><th>Patching</th><th>Failed</th><th>Open patches</th>"
             "</tr></thead><tbody>")
    for p in doc["policies"]:
        c = p["reportCounts"]
        ready = p["ready"] or {}
        h.append(
            f'<tr data-policy="{_e(p["name"])}"><td>{_e(p["name"])}'
            + ("" if p["exists"] else " <em>(missing)</em>")
            + f'</td><td title="{_e(ready.get("message"))}">{_e(ready.get("status") or "-")}</td>'
            + "".join(f'<td class="num">{c[k]}</td>' for k in (
                "total", "compliant", "baseImageOutdated", "vulnerable", "untrustedBase",
                "patching", "failed"))
            + f'<td class="num">{p["openPatches"]}</td></tr>'
        )
    h.append("</tbody></table>")

    unit = doc["history"]["unit"]
    h.append(f"<h2>ImagePatches over time (per {_e(unit)})</h2>")
    h.append('<p class="legend">' + "".join(
        f'<span><i style="background:{color}"></i>{_e(key)}</span>'
        for key, color in _COLORS.items()
    ) + '<span><i style="background:#0969da"></i>open at end</span></p>')
    h.append(history_svg(report))

    h.append('<h2>Workloads</h2><table id="workloads"><thead><tr><th>Namespace</th><th>Kind</th>'
             "<th>Name</th><th>Policy</th><th>State</th><th>Digest</th><th>Base</th>"
             "<th>Base outdated for</th><th>Findings</th><th>Out of compliance for</th>"
             "<th>Last patch</th><th>Result</th></tr></thead><tbody>")
    for w in doc["workloads"]:
        last = w["lastPatch"]
        outdated = [c["baseOutdatedSeconds"] for c in w["containers"] if c["baseOutdated"]]
        outdated_for = (
            _age(max((s for s in outdated if s is not None), default=None)) if outdated else "no"
        )
        findings = "-" if w["findingsOverBaseline"] is None else str(w["findingsOverBaseline"])
        if w["findingIds"]:
            findings = f'{_e(findings)}<br><code>{_e(" ".join(w["findingIds"]))}</code>'
        else:
            findings = _e(findings)
        digests = "<br>".join(_e(_short(d)) for d in w["digests"]) or "-"
        # <wbr>: a long base name may break after a slash, not mid-word.
        bases = "<br>".join(
            _e(c["base"]).replace("/", "/<wbr>") for c in w["containers"] if c["base"]
        ) or "-"
        if last:
            patch_cells = (
                f'<td>{_e(last["name"])} {_badge(last["phase"], "p")}<br>'
                f'<time datetime="{_e(last["at"])}">{_e(_when(last["at"]))}</time></td>'
                f'<td>{_e(last["result"])}</td>'
            )
        else:
            patch_cells = "<td>-</td><td>-</td>"
        # The reason only when it says more than the state does.
        reason = (
            f'<br><span class="sub">{_e(w["reason"])}</span>' if w["reason"] != w["state"] else ""
        )
        h.append(
            f'<tr class="workload" data-namespace="{_e(w["namespace"])}" '
            f'data-kind="{_e(w["kind"])}" data-name="{_e(w["name"])}" '
            f'data-state="{_e(w["state"])}"><td>{_e(w["namespace"])}</td><td>{_e(w["kind"])}</td>'
            f'<td>{_e(w["name"])}</td><td>{_e(w["policy"])}</td>'
            f'<td class="state" title="{_e(w["message"])}">{_badge(w["state"], "s")}{reason}</td>'
            f"<td><code>{digests}</code></td><td>{bases}</td><td>{_e(outdated_for)}</td>"
            f'<td class="num">{findings}</td><td>{_e(_age(w["outOfComplianceSeconds"]))}</td>'
            f"{patch_cells}</tr>"
        )
    if not doc["workloads"]:
        h.append('<tr><td colspan="12">No opted-in workloads match.</td></tr>')
    h.append("</tbody></table>")

    h.append('<h2>ImagePatches (audit trail)</h2><table id="patches"><thead><tr><th>Name</th>'
             "<th>Policy</th><th>Image</th><th>Reason</th><th>Phase</th><th>Created</th>"
             "<th>Ended</th><th>Approval</th><th>History</th></tr></thead><tbody>")
    for p in doc["patches"]:
        approval = p["approval"]
        h.append(
            f'<tr class="patch" data-name="{_e(p["name"])}"><td>{_e(p["name"])}</td>'
            f'<td>{_e(p["policy"])}</td><td><code>{_e(p["image"])}</code></td>'
            f'<td>{_e(p["reason"])}</td><td>{_badge(p["phase"], "p")}</td>'
            f'<td class="t">{_e(_when(p["createdAt"]))}</td>'
            f'<td class="t">{_e(_when(p["endedAt"]))}</td>'
            + (f'<td>{_e(approval["decision"])} by {_e(approval["by"] or "?")}'
               + (f': {_e(approval["reason"])}' if approval["reason"] else "") + "</td>"
               if approval else "<td>-</td>")
            + "<td>" + "<br>".join(
                f'{_e(_when(e.get("at")))} {_e(e.get("phase"))}'
                + (f' by {_e(e["by"])}' if e.get("by") else "")
                + (f': {_e(e["message"])}' if e.get("message") else "")
                for e in p["history"]
            ) + "</td></tr>"
        )
    if not doc["patches"]:
        h.append('<tr><td colspan="9">No ImagePatches.</td></tr>')
    h.append("</tbody></table>")
    nodes = doc["nodes"]
    if nodes is not None:
        h.append(f'<h2>Nodes (AMI currency, surveyed {_e(_when(nodes["surveyedAt"]))})</h2>'
                 '<table id="nodes"><thead><tr><th>Node</th><th>Group</th><th>Family</th>'
                 "<th>Version</th><th>AMI</th><th>Recommended</th><th>State</th>"
                 "<th>Behind</th><th>Reason</th></tr></thead><tbody>")
        for n in nodes["items"]:
            behind = f'{n["daysBehind"]} days' if n["daysBehind"] is not None else "-"
            h.append(
                f'<tr class="node" data-name="{_e(n["name"])}" data-state="{_e(n["state"])}">'
                f'<td>{_e(n["name"])}</td><td>{_e(n["nodeGroup"] or n["nodePool"] or "-")}</td>'
                f'<td>{_e(n["family"] or "-")}</td><td>{_e(n["kubeletVersion"] or "-")}</td>'
                f'<td><code>{_e(n["amiId"] or "-")}</code></td>'
                f'<td><code>{_e(n["recommendedAmiId"] or "-")}</code></td>'
                f'<td>{_badge(n["state"], "n")}</td><td>{_e(behind)}</td>'
                f'<td>{_e(n["reason"] or "-")}</td></tr>'
            )
        if not nodes["items"]:
            h.append('<tr><td colspan="9">No nodes.</td></tr>')
        h.append("</tbody></table>")
    h.append("</body></html>\n")
    return "".join(h)
