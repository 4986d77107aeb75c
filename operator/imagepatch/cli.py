"""Command-line entry point: ``imagepatch run`` starts the operator.

``imagepatch report`` reads the cluster for people (``imagepatch.cli_report``);
``approve``, ``reject``, ``why``, ``list``, ``retrigger`` and ``completion`` act
for them (``imagepatch.cli_plugin``). The same commands install as
``kubectl-imagepatch``, which kubectl runs as ``kubectl imagepatch``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from imagepatch import __version__, cli_plugin, cli_report

if TYPE_CHECKING:
    from imagepatch.handlers import Options

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    import kopf

    import imagepatch.handlers  # noqa: F401 - registers the kopf handlers

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs whole URLs at INFO; ECR blob redirects carry S3 signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.securityhub and not args.cluster_name:
        raise SystemExit("--securityhub needs --cluster-name (it goes into every finding's id)")
    if args.aws_config_result_token and not args.cluster_name:
        raise SystemExit("--aws-config-result-token needs --cluster-name (it goes into every "
                         "evaluated resource's id)")
    if args.argo_rollouts:
        imagepatch.handlers.watch_argo_rollouts()
    memo = kopf.Memo(options=options_from_args(args))
    scope = {"namespaces": args.namespace} if args.namespace else {"clusterwide": True}
    # standalone: kopf's peering pauses peers by priority, it is not leader
    # election; the Lease below decides which replica acts.
    run = dict(standalone=True, liveness_endpoint=args.liveness_endpoint, memo=memo, **scope)
    if not args.leader_elect:
        kopf.run(**run)
        return 0
    return asyncio.run(_lead_then_run(args, run))


async def _lead_then_run(args: argparse.Namespace, run: dict[str, Any]) -> int:
    """Hold the Lease, then run kopf; exit non-zero the moment the Lease is lost."""
    import kopf

    from imagepatch.adapters.kube import Kube
    from imagepatch.adapters.leader import LeaderElector, run_as_leader

    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"
    elector = LeaderElector(
        Kube(request_timeout=args.kube_request_timeout), namespace=args.operator_namespace,
        name=args.lease_name, identity=identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.lease_duration * 2 / 3, renew_period=args.lease_duration / 3,
    )
    await run_as_leader(elector, lambda: kopf.operator(**run),
                        standby_probe=args.liveness_endpoint)
    return 0


def options_from_args(args: argparse.Namespace) -> Options:
    """The operator's :class:`~imagepatch.handlers.Options` from ``imagepatch run``'s arguments."""
    from imagepatch.handlers import Options

    endpoints = {}
    for item in args.registry_endpoint:
        host, sep, url = item.partition("=")
        if not sep:
            raise SystemExit(f"--registry-endpoint wants HOST=URL, got {item!r}")
        endpoints[host] = url
    options = Options(
        aws_region=args.aws_region,
        events_queue_url=args.events_queue_url,
        registry_endpoints=endpoints,
        insecure_registries=tuple(args.insecure_registry),
        registry_allow_networks=tuple(args.registry_allow_network),
        detect_tick=args.detect_tick,
        operator_namespace=args.operator_namespace,
        **({"build_namespace": args.build_namespace} if args.build_namespace else {}),
        metrics_port=args.metrics_port,
        securityhub=args.securityhub,
        argo_rollouts=args.argo_rollouts,
        flagger=args.flagger,
        cluster_name=args.cluster_name,
        liveness_stale_after=args.liveness_stale_seconds,
        namespaces=tuple(args.namespace),
        kube_request_timeout=args.kube_request_timeout,
        registry_cache_bytes=args.registry_cache_size,
        registry_timeout=args.registry_timeout,
        registry_max_in_flight=args.registry_max_in_flight,
        registry_breaker_failures=args.registry_breaker_failures,
        registry_breaker_cooldown=args.registry_breaker_cooldown,
        policy_pass_budget=args.policy_pass_budget,
        node_survey=args.node_survey,
        node_survey_interval=args.node_survey_interval,
        node_ami_parameter_root=args.node_ami_parameter_root,
        aws_config_result_token=args.aws_config_result_token,
        aws_config_test_mode=args.aws_config_test_mode,
        aws_config_resource_type=args.aws_config_resource_type,
        notification_retry_timeout=args.notification_retry_timeout,
    )
    if options.build_namespace == options.operator_namespace:
        log.warning(
            "build Jobs run in the operator's own namespace %s (--build-namespace): build "
            "pods then share it with the operator's Secrets and ServiceAccount",
            options.build_namespace,
        )
    return options


_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def byte_size(text: str) -> int:
    """``64Mi``, ``500k``, ``1048576``: a size as Kubernetes quantities write it."""
    value = text.strip()
    number, unit = value.rstrip("kKMGi"), value[len(value.rstrip("kKMGi")):]
    if unit == "K":
        unit = "k"
    if unit not in _UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64Mi, 500k, 1048576)")
    return int(number) * _UNITS[unit]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CIDR network: {value!r}") from None


def build_parser(prog: str = "imagepatch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Keep container images patched.")
    parser.add_argument("--version", action="version", version=f"imagepatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "-n", "--namespace", action="append", default=[],
        help="watch only this namespace for workloads (repeatable; default: all)",
    )
    run.add_argument(
        "--liveness-endpoint", default="http://0.0.0.0:8080/healthz",
        help="where to serve the liveness probe (default: %(default)s)",
    )
    run.add_argument("--aws-region", default=os.environ.get("AWS_REGION"),
                     help="AWS region for ECR/Inspector findings and the events queue "
                          "(default: $AWS_REGION)")
    run.add_argument("--events-queue-url", default=None,
                     help="SQS queue receiving EventBridge ECR/Inspector events (optional)")
    run.add_argument("--registry-endpoint", action="append", default=[], metavar="HOST=URL",
                     help="reach registry HOST at URL instead (a mirror; repeatable)")
    run.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                     help="talk plain HTTP to HOST (loopback always is; repeatable)")
    run.add_argument("--registry-allow-network", action="append", default=[], metavar="CIDR",
                     type=_network,
                     help="let registries, token realms and redirects resolve to addresses in "
                          "this non-public network (default: public addresses only, besides "
                          "--registry-endpoint and --insecure-registry hosts; repeatable)")
    run.add_argument("--detect-tick", type=float, default=5.0,
                     help="seconds between checks for due policies (default: %(default)s)")
    run.add_argument("--operator-namespace",
                     default=os.environ.get("POD_NAMESPACE", "imagepatch-system"),
                     help="the operator's own namespace, the only one it reads Secrets from "
                          "(default: $POD_NAMESPACE or %(default)s)")
    run.add_argument("--build-namespace",
                     default=os.environ.get("IMAGEPATCH_BUILD_NAMESPACE") or None,
                     help="where job:<template> rebuilds read their template ConfigMaps and "
                          "create build Jobs (default: $IMAGEPATCH_BUILD_NAMESPACE or "
                          "imagepatch-builds; never the operator's namespace unless set so)")
    run.add_argument("--metrics-port", type=int, default=None,
                     help="serve Prometheus metrics on this port at /metrics (default: off)")
    run.add_argument("--securityhub", action="store_true",
                     default=os.environ.get("IMAGEPATCH_SECURITYHUB") == "true",
                     help="export non-compliant workloads as AWS Security Hub findings")
    run.add_argument("--argo-rollouts", action="store_true",
                     default=os.environ.get("IMAGEPATCH_ARGO_ROLLOUTS") == "true",
                     help="patch opted-in Argo Rollouts too (their CRD must be installed and the"
                          " operator granted access: the chart's argoRollouts.enabled)")
    run.add_argument("--flagger", action="store_true",
                     default=os.environ.get("IMAGEPATCH_FLAGGER") == "true",
                     help="gate Deployments that a Flagger Canary targets on the Canary's status"
                          " (the operator must be granted access to Canaries: the chart's"
                          " flagger.enabled)")
    run.add_argument("--cluster-name", default=os.environ.get("IMAGEPATCH_CLUSTER_NAME", ""),
                     help="this cluster's name in Security Hub finding ids (required with "
                          "--securityhub)")
    run.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                     help="hold a coordination.k8s.io Lease before acting, so only one replica "
                          "acts and others stand by (default: on)")
    run.add_argument("--lease-name", default="imagepatch-leader",
                     help="the Lease's name, in --operator-namespace (default: %(default)s)")
    run.add_argument("--lease-duration", type=float, default=15.0,
                     help="seconds a standby waits for an unrenewed Lease before taking over; "
                          "the leader renews every third of it and gives up after two thirds "
                          "(default: %(default)s)")
    run.add_argument("--liveness-stale-seconds", type=float, default=300.0,
                     help="the liveness probe fails after this long without a watch event or "
                          "an API server answer (default: %(default)s)")
    run.add_argument("--kube-request-timeout", type=_positive_seconds,
                     default=os.environ.get("IMAGEPATCH_KUBE_REQUEST_TIMEOUT", "60"),
                     help="seconds any one Kubernetes API call may take, the operator's and "
                          "kopf's (default: $IMAGEPATCH_KUBE_REQUEST_TIMEOUT or %(default)s)")
    run.add_argument("--registry-cache-size", type=byte_size,
                     default=os.environ.get("IMAGEPATCH_REGISTRY_CACHE_SIZE", "64Mi"),
                     help="memory budget of the cache of immutable registry reads, in bytes "
                          "or with a Ki/Mi/Gi suffix; 0 turns it off "
                          "(default: $IMAGEPATCH_REGISTRY_CACHE_SIZE or %(default)s)")
    run.add_argument("--registry-timeout", type=_positive_seconds, default=30.0,
                     help="seconds one registry operation may take, retries included "
                          "(default: %(default)s)")
    run.add_argument("--registry-max-in-flight", type=_positive_int, default=4,
                     help="registry operations in flight per registry host at most; the "
                          "others wait (default: %(default)s)")
    run.add_argument("--registry-breaker-failures", type=_positive_int, default=5,
                     help="failed operations in a row (after retries) that open a registry "
                          "host's circuit breaker: calls to it then fail fast "
                          "(RegistryCircuitOpen) until one probe succeeds (default: %(default)s)")
    run.add_argument("--registry-breaker-cooldown", type=_positive_seconds, default=30.0,
                     help="seconds an open circuit breaker fails calls fast before it lets "
                          "one probe through (default: %(default)s)")
    run.add_argument("--policy-pass-budget", type=_positive_seconds, default=60.0,
                     help="seconds one policy's detection pass may spend reading registries; "
                          "containers not evaluated by then are Unknown (PassBudgetExceeded, "
                          "naming the slow host) and the pass goes on (default: %(default)s)")
    run.add_argument("--node-survey", action=argparse.BooleanOptionalAction,
                     default=os.environ.get("IMAGEPATCH_NODE_SURVEY") == "true",
                     help="report each node's AMI against the EKS-optimized or Bottlerocket AMI "
                          "AWS recommends in SSM (needs ec2:DescribeInstances, "
                          "ec2:DescribeImages, ssm:GetParameters; default: "
                          "$IMAGEPATCH_NODE_SURVEY or off)")
    run.add_argument("--node-survey-interval", type=_positive_seconds, default=6 * 3600.0,
                     help="seconds between node surveys (default: %(default)s, 6 h)")
    run.add_argument("--node-ami-parameter-root", default="/aws/service",
                     help="the SSM path under which the recommended AMI ids are read "
                          "(default: %(default)s, where AWS publishes them)")
    run.add_argument("--aws-config-result-token",
                     default=os.environ.get("IMAGEPATCH_AWS_CONFIG_RESULT_TOKEN", ""),
                     help="report each opted-in workload's compliance to AWS Config "
                          "(PutEvaluations) with this ResultToken of a custom rule (docs/aws.md; "
                          "default: $IMAGEPATCH_AWS_CONFIG_RESULT_TOKEN, empty: off); needs "
                          "--cluster-name")
    run.add_argument("--aws-config-test-mode", action="store_true",
                     default=os.environ.get("IMAGEPATCH_AWS_CONFIG_TEST_MODE") == "true",
                     help="send AWS Config evaluations with TestMode: Config checks the calls "
                          "and records nothing (to try the set-up)")
    run.add_argument("--aws-config-resource-type", default="Imagepatch::Kubernetes::Workload",
                     help="ComplianceResourceType of the evaluations (default: %(default)s)")
    run.add_argument("--notification-retry-timeout", type=_positive_seconds, default=300.0,
                     help="seconds one notification is retried on a sink that fails "
                          "transiently (5xx, 429, timeouts) before it counts as failed and the "
                          "policy shows NotificationsDegraded (default: %(default)s)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)
    cli_report.add_parser(sub)
    version = sub.add_parser("version", help="print the version and exit")
    version.set_defaults(func=_version)
    cli_plugin.add_parsers(sub)
    return parser


def _version(args: argparse.Namespace) -> int:
    print(f"imagepatch {__version__}")
    return 0


def main(argv: list[str] | None = None, prog: str = "imagepatch") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.command in ("run", "report", "version"):
        return int(args.func(args))
    args.prog = prog
    return cli_plugin.run(args)


def kubectl_main() -> int:
    """``kubectl-imagepatch``: the same commands, named as kubectl runs them."""
    return main(prog="kubectl imagepatch")


def kubectl_complete() -> int:
    """``kubectl_complete-imagepatch``: completes ``kubectl imagepatch …`` for kubectl."""
    return cli_plugin.completion_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
