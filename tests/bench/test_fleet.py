"""Benchmark: the fleet at 100 and 1,000 workloads (3,000 with ``BENCH_LARGE=1``, both fleets).

Not part of ``make test`` (figures are printed, never asserted; the 50-workload
smoke run in ``tests/e2e/test_bench_smoke.py`` is). Run with ``make bench``.
Each scale gets a fresh local control plane, so one scale's pods and watches
do not load the next; the registry and moto are shared, under per-run names.
The table (one column per scale) is printed at the end and every figure is
written to ``bench-results.json`` (``BENCH_RESULTS`` to write elsewhere), from
which ``make bench-chart`` draws ``docs/benchmarks-scaling.png``.

``BENCH_SCALES=100,1000`` picks the scales of the fleet that pins digests
(``0``: none), ``BENCH_BY_TAG_SCALES`` those of the fleet deployed by tag
(1,000 by default, 1,000 and 3,000 with ``BENCH_LARGE=1``; ``0``: none),
which measures the event path when every app tag must be resolved: the
registry requests after one base push event.
``BENCH_IDLE_SECONDS`` is the length of each idle window (60 by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench.fleet import FleetSpec, format_table, growth, run_fleet, write_results
from tests.cluster.harness import LocalCluster, build_binaries
from tests.conftest import Kube
from tests.support.crds import install_crds

pytestmark = pytest.mark.kwok
REPO = Path(__file__).resolve().parents[2]


def scales() -> list[int]:
    if os.environ.get("BENCH_SCALES"):
        return [int(s) for s in os.environ["BENCH_SCALES"].split(",") if s.strip() and int(s) > 0]
    return [100, 1000] + ([3000] if os.environ.get("BENCH_LARGE") == "1" else [])


def by_tag_scales() -> list[int]:
    large = os.environ.get("BENCH_LARGE") == "1"
    raw = os.environ.get("BENCH_BY_TAG_SCALES", "1000,3000" if large else "1000")
    return [int(s) for s in raw.split(",") if s.strip() and int(s) > 0]


def test_fleet_scaling(registry, moto_server, tmp_path_factory) -> None:
    if os.environ.get("IMAGEPATCH_TEST_KUBECONFIG"):
        pytest.skip("the fleet bench starts its own local control plane per scale")
    idle = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    out = Path(os.environ.get("BENCH_RESULTS", REPO / "bench-results.json"))
    runs = []
    fleets = [(n, False) for n in scales()] + [(n, True) for n in by_tag_scales()]
    for n, by_tag in fleets:
        work = tmp_path_factory.mktemp(f"fleet-{n}{'-by-tag' if by_tag else ''}")
        cluster = LocalCluster(state_dir=work / "cluster", bin_dir=build_binaries())
        cluster.start()
        try:
            kube = Kube(kubeconfig=cluster.kubeconfig, kubectl_bin=str(cluster.bin_dir / "kubectl"),
                        kwok=True, audit_log=cluster.audit_log)
            install_crds(kube)
            runs.append(run_fleet(kube, cluster.audit_log, registry, moto_server, work,
                                  FleetSpec(workloads=n, idle_seconds=idle, by_tag=by_tag)))
        finally:
            cluster.stop()
        write_results(out, runs)  # after every scale: a later failure keeps what was measured
    print("\n" + format_table(runs))
    print(growth([r for r in runs if not r.get("by_tag")]))
    print(f"figures written to {out}")
