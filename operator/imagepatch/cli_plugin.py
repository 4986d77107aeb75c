"""The verbs people run from ``kubectl``: ``kubectl imagepatch approve|reject|why|hold|…``.

Entry-point level, below ``imagepatch.cli`` (which adds these subcommands to
both ``imagepatch`` and ``kubectl-imagepatch``; kubectl runs any executable
named ``kubectl-<name>`` on PATH as ``kubectl <name>``). Every verb talks to
the API server as the user, through their kubeconfig (``--kubeconfig``,
``--context``, ``-n/--namespace`` as kubectl takes them), so what a user may
do is what their RBAC lets them do; nothing here needs the operator's rights.

* ``approve NAME`` / ``reject NAME --reason …`` write ``spec.approval`` of an
  ImagePatch with ``by`` = the authenticated user (a ``SelfSubjectReview``
  asks the API server who that is; the kubeconfig context's user name when
  the server cannot answer).
* ``why KIND/NAME`` says in plain words what the operator recorded of one
  workload: its state and why, each container's evidence, the open patch and
  the last result. It reads what ``imagepatch report`` reads and builds the
  same row (``core.report``), so the two never disagree.
* ``list`` shows the ImagePatches with their phase, targets and age.
* ``hold KIND/NAME [--until 3d|2026-12-24|<RFC 3339>] [--reason …]`` writes
  the ``imagepatch.dev/hold`` annotation on the workload (``at``, ``until``,
  ``reason``, ``by`` = the authenticated user, as ``reject`` records it):
  imagepatch proposes and rolls out no patch for it until then (default 24
  hours, at most 30 days; ``core.hold`` reads it, as a request). ``release
  KIND/NAME`` removes it. Both need the user's own right to patch the
  workload; ``why`` shows the hold, or why an unreadable one is ignored.
* ``retrigger POLICY`` sets the ``imagepatch.dev/requestedAt`` annotation the
  operator already honours: it runs a detection pass for the policy now and
  echoes the value in ``status.lastHandledReconcileAt`` (as Flux does with
  ``reconcile.fluxcd.io/requestedAt``).
* ``completion bash|zsh`` prints a completion script for ``kubectl-imagepatch``
  and ``imagepatch``; ``kubectl imagepatch <TAB>`` completes through
  ``kubectl_complete-imagepatch`` (:func:`completion_main`), the executable
  kubectl (1.26+) runs to complete a plugin's arguments.

Exit status: 0; 1 when the cluster refuses or the object is missing; 2 for
bad arguments (argparse's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core import hold, kinds
from imagepatch.model.imagepatch import TERMINAL_PHASES, Phase
from imagepatch.model.names import (
    GROUP,
    HOLD_ANNOTATION,
    IMAGEPATCHES,
    POLICIES,
    REQUESTED_AT_ANNOTATION,
    VERSION,
)
from imagepatch.model.times import format_time

# kubectl's names and short names of the kinds imagepatch patches.
KIND_ALIASES = {
    "deployment": kinds.DEPLOYMENT, "deployments": kinds.DEPLOYMENT, "deploy": kinds.DEPLOYMENT,
    "statefulset": kinds.STATEFULSET, "statefulsets": kinds.STATEFULSET,
    "sts": kinds.STATEFULSET,
    "daemonset": kinds.DAEMONSET, "daemonsets": kinds.DAEMONSET, "ds": kinds.DAEMONSET,
    "cronjob": kinds.CRONJOB, "cronjobs": kinds.CRONJOB, "cj": kinds.CRONJOB,
}
VERBS = ("approve", "reject", "why", "hold", "release", "list", "report", "retrigger",
         "completion", "version")
# The verbs that take KIND/NAME (completed as kind/).
WORKLOAD_VERBS = ("why", "hold", "release")


class PluginError(Exception):
    """What to tell the user, on stderr, before exiting 1."""


# --- arguments ----------------------------------------------------------------------------


def _workload(value: str) -> tuple[str, str]:
    kind, sep, name = value.partition("/")
    if not sep or not name or kind.lower() not in KIND_ALIASES:
        raise argparse.ArgumentTypeError(
            f"want KIND/NAME with KIND one of deployment (deploy), statefulset (sts), "
            f"daemonset (ds), cronjob (cj); got {value!r}"
        )
    return KIND_ALIASES[kind.lower()], name


def _connection(parser: argparse.ArgumentParser, namespaced: bool) -> None:
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context to use")
    if namespaced:
        parser.add_argument("-n", "--namespace", default=None,
                            help="the workload's namespace (default: the context's, as kubectl)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the plugin's verbs to the ``imagepatch`` subcommands."""
    approve = sub.add_parser("approve", help="approve an ImagePatch awaiting approval",
                             description="Write spec.approval: Approved, by you.")
    approve.add_argument("name", metavar="NAME", help="the ImagePatch")
    approve.add_argument("--reason", default="", help="why (recorded with the decision)")
    _connection(approve, namespaced=False)
    approve.set_defaults(func=_decide, decision="Approved")

    reject = sub.add_parser("reject", help="reject an ImagePatch awaiting approval",
                            description="Write spec.approval: Rejected, by you, with a reason.")
    reject.add_argument("name", metavar="NAME", help="the ImagePatch")
    reject.add_argument("--reason", required=True, help="why (recorded with the decision)")
    _connection(reject, namespaced=False)
    reject.set_defaults(func=_decide, decision="Rejected")

    why = sub.add_parser("why", help="why a workload is in its state, in plain words",
                         description="The operator's record of one workload: state, evidence, "
                         "open patch, last result.")
    why.add_argument("workload", metavar="KIND/NAME", type=_workload,
                     help="e.g. deploy/web, sts/db, ds/agent, cj/nightly")
    why.add_argument("--operator-namespace", default="imagepatch-system",
                     help="where the operator keeps its memory (default: %(default)s)")
    _connection(why, namespaced=True)
    why.set_defaults(func=_why)

    held = sub.add_parser(
        "hold", help="propose and roll out no patch for a workload until a time",
        description=f"Write {HOLD_ANNOTATION} on the workload, by you: imagepatch proposes and "
        "rolls out no patch for it until then (a rollout already patching it goes on; "
        "rollbacks are never held). It ends by itself: default 24h, at most "
        f"{hold.MAX_HOLD.days} days.")
    held.add_argument("workload", metavar="KIND/NAME", type=_workload,
                      help="e.g. deploy/web, sts/db, ds/agent, cj/nightly")
    held.add_argument("--until", default=None, metavar="TIME|DURATION",
                      help="a duration (90m, 12h, 3d, 1w), a date (2026-12-24, 00:00 UTC) or an "
                      "RFC 3339 time with its offset (default: 24h from now)")
    held.add_argument("--reason", default="", help="why (shown in the workload's state)")
    _connection(held, namespaced=True)
    held.set_defaults(func=_hold)

    release = sub.add_parser("release", help="end a workload's hold now",
                             description=f"Remove {HOLD_ANNOTATION} from the workload: "
                             "imagepatch patches it as usual again at its next pass.")
    release.add_argument("workload", metavar="KIND/NAME", type=_workload,
                         help="e.g. deploy/web, sts/db, ds/agent, cj/nightly")
    _connection(release, namespaced=True)
    release.set_defaults(func=_release)

    listing = sub.add_parser("list", help="list ImagePatches (phase, targets, age)")
    listing.add_argument("--policy", default=None, help="only this ImagePatchPolicy's")
    listing.add_argument("-A", "--all", action="store_true",
                         help="also the ended ones (Succeeded, RolledBack, Failed, Closed)")
    _connection(listing, namespaced=False)
    listing.set_defaults(func=_list)

    retrigger = sub.add_parser("retrigger", help="run a policy's detection pass now",
                               description=f"Set {REQUESTED_AT_ANNOTATION} on the "
                               "ImagePatchPolicy; the operator runs its detection pass now "
                               "and echoes the value in status.lastHandledReconcileAt.")
    retrigger.add_argument("policy", metavar="POLICY", help="the ImagePatchPolicy")
    _connection(retrigger, namespaced=False)
    retrigger.set_defaults(func=_retrigger)

    completion = sub.add_parser("completion", help="print a shell completion script",
                                description="bash: source <(kubectl-imagepatch completion "
                                "bash); zsh: source <(kubectl-imagepatch completion zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(func=_completion)


# --- the cluster ---------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from imagepatch.adapters.report_source import api_client

    return api_client(args.kubeconfig, args.context)


def _context(args: argparse.Namespace) -> Mapping[str, Any]:
    """The kubeconfig context in use (``--context`` or the current one); {} in a pod."""
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        return {}
    chosen = next((c for c in contexts if c.get("name") == args.context), None)
    return (chosen or current or {}).get("context") or {}


def _user(api: Any, args: argparse.Namespace) -> str:
    """Who the API server says the caller is; the context's user name if it cannot say."""
    from kubernetes import client

    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1",
                                       kind="SelfSubjectReview")
        )
        info = review.status.user_info if review.status else None
        name = info.username if info else ""
        if name:
            return str(name)
    except client.ApiException:
        pass  # an older server, or no right to ask: the kubeconfig still names a user
    return str(_context(args).get("user") or "")


def _refused(exc: Any, what: str) -> PluginError:
    if exc.status == 404:
        return PluginError(f"{what}: not found")
    try:
        message = json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError):
        message = exc.reason
    return PluginError(f"{what}: {message} (HTTP {exc.status})")


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes import client

    try:
        return fn(*args, **kwargs)
    except client.ApiException as exc:
        raise _refused(exc, what) from None


# --- verbs ---------------------------------------------------------------------------------


def _decide(args: argparse.Namespace) -> int:
    from kubernetes import client

    api = _client(args)
    custom = client.CustomObjectsApi(api)
    what = f"imagepatch {args.name}"
    body = _call(what, custom.get_cluster_custom_object, GROUP, VERSION, IMAGEPATCHES, args.name)
    phase = (body.get("status") or {}).get("phase") or str(Phase.PENDING)
    if phase in TERMINAL_PHASES:
        raise PluginError(f"{what} has ended ({phase}): there is nothing to "
                          f"{'approve' if args.decision == 'Approved' else 'reject'}")
    approval = {"decision": args.decision, "by": _user(api, args)}
    if args.reason:
        approval["reason"] = args.reason
    # resourceVersion: a decision is made on what the user saw, not on a newer patch.
    patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
             "spec": {"approval": approval}}
    _call(what, custom.patch_cluster_custom_object, GROUP, VERSION, IMAGEPATCHES, args.name, patch)
    note = "" if phase == str(Phase.AWAITING_APPROVAL) else f" (it is {phase}, not awaiting " \
        "approval: the decision applies if the policy asks for one)"
    print(f"{what} {args.decision.lower()} by {approval['by'] or 'an unnamed user'}{note}")
    return 0


def _age(created: str, now: dt.datetime) -> str:
    """kubectl's short age: 42s, 5m, 3h, 2d."""
    try:
        seconds = int((now - dt.datetime.fromisoformat(created.replace("Z", "+00:00")))
                      .total_seconds())
    except ValueError:
        return "<unknown>"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _targets(spec: Mapping[str, Any]) -> str:
    names = [f"{t.get('kind', kinds.DEPLOYMENT).lower()}/{t.get('namespace', '')}/"
             f"{t.get('name', '')}" for t in spec.get("targets") or []]
    if len(names) > 2:
        return f"{names[0]},{names[1]} +{len(names) - 2}"
    return ",".join(names) or "<none>"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns as ``kubectl get`` prints them: left-aligned, three spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def _list(args: argparse.Namespace) -> int:
    from kubernetes import client

    custom = client.CustomObjectsApi(_client(args))
    items = _call("list imagepatches", custom.list_cluster_custom_object,
                  GROUP, VERSION, IMAGEPATCHES)["items"]
    now = dt.datetime.now(dt.UTC)
    rows = [("NAME", "POLICY", "PHASE", "PROGRESS", "IMAGE", "TARGETS", "AGE")]
    for item in sorted(items, key=lambda i: i["metadata"].get("creationTimestamp") or ""):
        spec, status = item.get("spec") or {}, item.get("status") or {}
        phase = status.get("phase") or str(Phase.PENDING)
        if (phase in TERMINAL_PHASES and not args.all) or (
                args.policy and spec.get("policy") != args.policy):
            continue
        rows.append((item["metadata"]["name"], spec.get("policy", ""), phase,
                     status.get("progress") or "-", spec.get("image", ""), _targets(spec),
                     _age(item["metadata"].get("creationTimestamp") or "", now)))
    if len(rows) == 1:
        print("No open ImagePatches found." if not args.all else "No ImagePatches found.",
              file=sys.stderr)
        return 0
    sys.stdout.write(table(rows))
    return 0


def _retrigger(args: argparse.Namespace) -> int:
    from kubernetes import client

    custom = client.CustomObjectsApi(_client(args))
    what = f"imagepatchpolicy {args.policy}"
    value = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    _call(what, custom.patch_cluster_custom_object, GROUP, VERSION, POLICIES, args.policy,
          {"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: value}}})
    print(f"{what} retriggered ({REQUESTED_AT_ANNOTATION}={value}); the operator echoes it in "
          f"status.lastHandledReconcileAt once the pass has run")
    return 0


def _when(at: dt.datetime | None, now: dt.datetime) -> str:
    if at is None:
        return ""
    return f" (since {at.strftime('%Y-%m-%d %H:%M:%SZ')}, {_age(at.isoformat(), now)} ago)"


def explain(row: Any, policy: Any, now: dt.datetime) -> str:
    """A ``core.report.WorkloadRow`` (and its policy's summary, if any) in plain words."""
    lines = [f"{row.kind} {row.namespace}/{row.name} is {row.state}{_when(row.since, now)}."]
    if row.policy:
        lines.append(f"Policy: {row.policy}"
                     + ("" if policy is None or policy.exists else " (no such policy)") + ".")
    if row.reason and row.reason != row.state:
        lines.append(f"Why: {row.reason}" + (f": {row.message}" if row.message else "") + ".")
    elif row.message:
        lines.append(f"Why: {row.message}.")
    if row.out_of_compliance_since is not None:
        lines.append(f"Out of compliance{_when(row.out_of_compliance_since, now)}.")
    for c in row.containers:
        lines.append(f"Container {c.name}: {c.image}" + (f" ({c.digest})" if c.digest else ""))
        lines.append(f"  state {c.state}" + (f", {c.reason}" if c.reason else "")
                     + (f": {c.message}" if c.message else ""))
        if c.base:
            outdated = "outdated" if c.base_outdated else "current"
            lines.append(f"  base image {c.base}: {outdated}"
                         + (f" (built on {c.base_digest}, latest {c.base_current})"
                            if c.base_outdated else ""))
        if c.findings_over_baseline is not None:
            lines.append(f"  findings over the policy's baseline: {c.findings_over_baseline}")
    if row.finding_ids:
        lines.append("Findings: " + ", ".join(row.finding_ids) + ".")
    patch = row.last_patch
    if patch is None:
        lines.append("No ImagePatch concerns it.")
    else:
        open_ = patch.phase not in TERMINAL_PHASES
        lines.append(f"{'Open' if open_ else 'Last'} patch: {patch.name}, {patch.phase}"
                     f"{_when(patch.at, now)}, for {patch.reason}.")
        if patch.result:
            lines.append(f"  result: {patch.result}")
        if patch.approval:
            lines.append(f"  {patch.approval.get('decision', '')} by "
                         f"{patch.approval.get('by') or 'an unnamed user'}"
                         + (f": {patch.approval['reason']}" if patch.approval.get("reason")
                            else ""))
        elif patch.phase == str(Phase.AWAITING_APPROVAL):
            lines.append(f"  to decide: kubectl imagepatch approve {patch.name}  or  "
                         f"kubectl imagepatch reject {patch.name} --reason '...'")
    return "\n".join(lines) + "\n"


def _why(args: argparse.Namespace) -> int:
    from imagepatch.adapters.errors import AdapterError
    from imagepatch.adapters.report_source import read_inputs
    from imagepatch.core.report import Filters, build_report

    kind, name = args.workload
    namespace = _namespace(args)
    what = f"{kind.lower()} {namespace}/{name}"
    api = _client(args)
    body = _call(what, _workload_api(api, kind, "read"), name, namespace)
    held = hold.status((body.metadata.annotations if body.metadata else None) or {},
                       dt.datetime.now(dt.UTC)).describe()
    try:
        inputs = read_inputs(api, namespace=namespace, operator_namespace=args.operator_namespace)
    except AdapterError as exc:
        raise PluginError(str(exc)) from None
    now = dt.datetime.now(dt.UTC)
    report = build_report(policies=inputs.policies, workloads=inputs.workloads,
                          imagepatches=inputs.imagepatches, now=now,
                          filters=Filters(namespace=namespace), warnings=inputs.warnings,
                          memory=inputs.memory, node_survey=inputs.node_survey)
    row = next((r for r in report.workloads if (r.kind, r.name) == (kind, name)), None)
    if row is None:
        # Not opted in (it exists: it was read above).
        print(f"{kind} {namespace}/{name} is not opted in: imagepatch watches only workloads "
              f"annotated imagepatch.dev/policy=<policy> (or in a namespace so annotated).")
        if held:
            print(held)
        return 0
    policy = next((p for p in report.policies if p.name == row.policy), None)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(explain(row, policy, now) + (f"{held}\n" if held else ""))
    return 0


def _namespace(args: argparse.Namespace) -> str:
    return str(args.namespace or _context(args).get("namespace") or "default")


def _workload_api(api: Any, kind: str, verb: str) -> Any:
    """The client's ``read``/``patch`` call for a workload of ``kind``."""
    from kubernetes import client

    if kind == kinds.CRONJOB:
        return getattr(client.BatchV1Api(api), f"{verb}_namespaced_cron_job")
    return getattr(client.AppsV1Api(api), f"{verb}_namespaced_{_snake(kind)}")


def _snake(kind: str) -> str:
    return {kinds.DEPLOYMENT: "deployment", kinds.STATEFULSET: "stateful_set",
            kinds.DAEMONSET: "daemon_set"}[kind]


def _hold(args: argparse.Namespace) -> int:
    kind, name = args.workload
    namespace = _namespace(args)
    what = f"{kind.lower()} {namespace}/{name}"
    now = dt.datetime.now(dt.UTC)
    try:
        until = hold.parse_until(args.until, now)
    except hold.HoldError as exc:
        raise PluginError(str(exc)) from None
    api = _client(args)
    by = _user(api, args)
    value = hold.annotation(until=until, now=now, reason=args.reason, by=by)
    _call(what, _workload_api(api, kind, "patch"), name, namespace,
          {"metadata": {"annotations": {HOLD_ANNOTATION: value}}})
    print(f"{what} held until {format_time(until)} by {by or 'an unnamed user'}"
          + (f": {args.reason}" if args.reason else "")
          + f". imagepatch proposes and rolls out no patch for it until then; to end it sooner: "
          f"kubectl imagepatch release {kind.lower()}/{name} -n {namespace}")
    return 0


def _release(args: argparse.Namespace) -> int:
    kind, name = args.workload
    namespace = _namespace(args)
    what = f"{kind.lower()} {namespace}/{name}"
    api = _client(args)
    body = _call(what, _workload_api(api, kind, "read"), name, namespace)
    annotations = (body.metadata.annotations if body.metadata else None) or {}
    if HOLD_ANNOTATION not in annotations:
        print(f"{what} has no hold: nothing to release")
        return 0
    # resourceVersion: release the hold that was read, not one set since.
    _call(what, _workload_api(api, kind, "patch"), name, namespace,
          {"metadata": {"resourceVersion": body.metadata.resource_version,
                        "annotations": {HOLD_ANNOTATION: None}}})
    print(f"{what} released: imagepatch patches it as usual again at its next pass")
    return 0


_BASH = """\
# bash completion for {prog} (source <({prog} completion bash))
_{fn}() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "{verbs}" -- "$cur"))
  elif [ "${{COMP_WORDS[1]}}" = completion ]; then
    COMPREPLY=($(compgen -W "bash zsh" -- "$cur"))
  elif [[ " {workload_verbs} " == *" ${{COMP_WORDS[1]}} "* ]] && [ "$COMP_CWORD" -eq 2 ] \\
       && [[ "$cur" != */* && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "{kinds}" -S / -- "$cur")); compopt -o nospace
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "{flags}" -- "$cur"))
  fi
}}
complete -F _{fn} {prog}
"""

_ZSH = """\
#compdef {prog}
# zsh completion for {prog} (source <({prog} completion zsh))
_{fn}() {{
  if (( CURRENT == 2 )); then
    compadd -- {verbs}
  elif [[ ${{words[2]}} == completion ]]; then
    compadd -- bash zsh
  elif (( CURRENT == 3 )) && [[ " {workload_verbs} " == *" ${{words[2]}} "* \\
         && ${{words[CURRENT]}} != */* && ${{words[CURRENT]}} != -* ]]; then
    compadd -S / -- {kinds}
  elif [[ ${{words[CURRENT]}} == -* ]]; then
    compadd -- {flags}
  fi
}}
compdef _{fn} {prog}
"""


def completion_script(shell: str, prog: str) -> str:
    """A small static completion script: the verbs, the kinds of ``why``/``hold``/``release``,
    the flags."""
    template = _BASH if shell == "bash" else _ZSH
    return template.format(prog=prog, fn=prog.replace("-", "_"), verbs=" ".join(VERBS),
                           workload_verbs=" ".join(WORKLOAD_VERBS), flags=" ".join(FLAGS),
                           kinds=" ".join(_KINDS))


FLAGS = ("--kubeconfig", "--context", "--namespace", "--reason", "--until", "--policy", "--all",
         "--help")
_KINDS = ("deploy", "sts", "ds", "cj", "deployment", "statefulset", "daemonset", "cronjob")
# cobra's ShellCompDirectiveNoFileComp (and NoSpace, for `why KIND/`).
_NO_FILES, _NO_SPACE = 4, 2


def complete(words: Sequence[str]) -> tuple[list[str], int]:
    """Candidates for the last of ``words`` (the arguments after ``kubectl imagepatch``).

    The same choices as the static scripts; kubectl asks for them through
    ``kubectl_complete-imagepatch`` and prints them in cobra's format.
    """
    *before, current = list(words) or [""]
    if not before:
        return [v for v in VERBS if v.startswith(current)], _NO_FILES
    if current.startswith("-"):
        return [f for f in FLAGS if f.startswith(current)], _NO_FILES
    if before[0] == "completion" and len(before) == 1:
        return [s for s in ("bash", "zsh") if s.startswith(current)], _NO_FILES
    if before[0] in WORKLOAD_VERBS and "/" not in current and len(before) == 1:
        return [f"{k}/" for k in _KINDS if k.startswith(current)], _NO_FILES | _NO_SPACE
    return [], _NO_FILES


def completion_main(argv: Sequence[str]) -> int:
    """``kubectl_complete-imagepatch``: what kubectl runs to complete ``kubectl imagepatch …``."""
    candidates, directive = complete(argv)
    sys.stdout.write("".join(f"{c}\n" for c in candidates) + f":{directive}\n")
    return 0


def _completion(args: argparse.Namespace) -> int:
    # `kubectl imagepatch` completes through kubectl; the script is for the executables.
    sys.stdout.write(completion_script(args.shell, args.prog.replace(" ", "-")))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a verb; a cluster's refusal or a missing object is one line on stderr, exit 1."""
    try:
        return int(args.func(args))
    except PluginError as exc:
        print(f"{args.prog} {args.command}: {exc}", file=sys.stderr)
        return 1
