"""Command-line entry point: ``imagepatch run`` starts the operator.

Later subcommands (``imagepatch report``) read the cluster for people.
"""

from __future__ import annotations

import argparse
import logging
import sys

from imagepatch import __version__


def _run(args: argparse.Namespace) -> int:
    import kopf

    import imagepatch.handlers  # noqa: F401  (registers the kopf handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs whole URLs at INFO; ECR blob redirects carry S3 signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # standalone: one replica with `strategy: Recreate` (see deploy/); kopf's
    # peering pauses peers by priority, it is not leader election.
    scope = {"namespaces": args.namespace} if args.namespace else {"clusterwide": True}
    kopf.run(standalone=True, liveness_endpoint=args.liveness_endpoint, **scope)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagepatch", description="Keep container images patched."
    )
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
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
