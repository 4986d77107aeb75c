"""Benchmark: the fleet at 100 and 1,000 workloads (3,000 with ``BENCH_LARGE=1``).

Not part of ``make test`` (figures are printed, never asserted; the 50-workload
smoke run in ``tests/e2e/test_bench_smoke.py`` is). Run with ``make bench``.
Each scale gets a fresh local control plane, so one scale's pods and watches
do not load the next; the registry and moto are shared, under per-run names.
The table (one column per scale) is printed at the end and every figure is
written to ``bench-results.json`` (``BENCH_RESULTS`` to write elsewhere), from
which ``make bench-chart`` draws ``docs/benchmarks-scaling.png``.

``BENCH_SCALES=100,1000`` picks the scales, ``BENCH_IDLE_SECONDS`` the length
of each idle window (60 by default).
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
        return [int(s) for s in os.environ["BENCH_SCALES"].split(",") if s.strip()]
    return [100, 1000] + ([3000] if os.environ.get("BENCH_LARGE") == "1" else [])


def test_fleet_scaling(registry, moto_server, tmp_path_factory) -> None:
    if os.environ.get("IMAGEPATCH_TEST_KUBECONFIG"):
        pytest.skip("the fleet bench starts its own local control plane per scale")
    idle = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    out = Path(os.environ.get("BENCH_RESULTS", REPO / "bench-results.json"))
    runs = []
    for n in scales():
        work = tmp_path_factory.mktemp(f"fleet-{n}")
        cluster = LocalCluster(state_dir=work / "cluster", bin_dir=build_binaries())
        cluster.start()
        try:
            kube = Kube(kubeconfig=cluster.kubeconfig, kubectl_bin=str(cluster.bin_dir / "kubectl"),
                        kwok=True, audit_log=cluster.audit_log)
            install_crds(kube)
            runs.append(run_fleet(kube, cluster.audit_log, registry, moto_server, work,
                                  FleetSpec(workloads=n, idle_seconds=idle)))
        finally:
            cluster.stop()
        write_results(out, runs)  # after every scale: a later failure keeps what was measured
    print("\n" + format_table(runs))
    print(growth(runs))
    print(f"figures written to {out}")
