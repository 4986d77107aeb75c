"""``imagepatch report``: the compliance report, read from the cluster, for people.

Entry-point level, below ``imagepatch.cli`` (which adds the subcommand): it
reads the cluster through ``adapters.report_source`` (list only, so the
``view`` ClusterRole is enough), builds the report with the pure
``core.report``, and renders it with ``imagepatch.cli_render``:

a table (default), JSON, CSV or one self-contained HTML page.

Usage::

    imagepatch report [-n NAMESPACE] [--policy NAME]... [--state STATE]...
                      [-o table|json|csv|html] [--kubeconfig PATH] [--context NAME]

``--policy`` and ``--state`` repeat or take comma-separated lists; states
match case-insensitively. Exit status: 0, or 1 when the cluster cannot be read.

The formats and the JSON schema are ``imagepatch.cli_render``'s. How each
value is derived (e.g. what "out of compliance since" and "base outdated
since" mean) is written down in ``imagepatch.core.report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from imagepatch.cli_render import FORMATS, render
from imagepatch.core.report import STATES, Filters, build_report

# --- arguments ----------------------------------------------------------------------------


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _state(value: str) -> list[str]:
    known = {s.lower(): s for s in STATES}
    out = []
    for item in _listed(value):
        if item.lower() not in known:
            raise argparse.ArgumentTypeError(
                f"unknown state {item!r}; one of: {', '.join(STATES)}"
            )
        out.append(known[item.lower()])
    return out


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``report`` to the ``imagepatch`` subcommands."""
    report = sub.add_parser(
        "report",
        help="report compliance of opted-in workloads, and the ImagePatch history",
        description="Read the cluster (list only; the view ClusterRole is enough) and report "
        "each opted-in workload's compliance, its last patch, and the ImagePatch history.",
    )
    report.add_argument("-n", "--namespace", default=None,
                        help="only workloads in this namespace (default: all namespaces)")
    report.add_argument("--policy", type=_listed, action="append", default=[],
                        help="only this ImagePatchPolicy (repeatable, or comma-separated)")
    report.add_argument("--state", type=_state, action="append", default=[],
                        help=f"only workloads in this state (repeatable, or comma-separated): "
                             f"{', '.join(STATES)}")
    report.add_argument("-o", "--output", choices=FORMATS, default="table",
                        help="output format (default: %(default)s)")
    report.add_argument("--kubeconfig", default=None,
                        help="kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    report.add_argument("--context", default=None, help="kubeconfig context to use")
    report.add_argument("--operator-namespace", default="imagepatch-system",
                        help="where the operator keeps its memory (default: %(default)s); "
                        "without access to it, states are the workloads' annotations")
    report.set_defaults(func=run)
    return report


def run(args: argparse.Namespace) -> int:
    from imagepatch.adapters.errors import AdapterError
    from imagepatch.adapters.report_source import api_client, read_inputs

    filters = Filters(
        namespace=args.namespace or None,
        policies=frozenset(p for group in args.policy for p in group),
        states=frozenset(s for group in args.state for s in group),
    )
    try:
        inputs = read_inputs(api_client(args.kubeconfig, args.context), namespace=filters.namespace,
                             operator_namespace=args.operator_namespace)
    except AdapterError as exc:
        print(f"imagepatch report: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a missing or broken kubeconfig: say so, no traceback
        if type(exc).__name__ != "ConfigException":
            raise
        print(f"imagepatch report: kubeconfig: {exc}", file=sys.stderr)
        return 1
    report = build_report(
        policies=inputs.policies,
        workloads=inputs.workloads,
        imagepatches=inputs.imagepatches,
        now=dt.datetime.now(dt.UTC),
        filters=filters,
        warnings=inputs.warnings,
        memory=inputs.memory,
        node_survey=inputs.node_survey,
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(render(report, args.output))
    return 0
