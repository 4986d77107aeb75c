"""The fleet benchmark at 50 workloads: it runs end to end and its figures have their shape.

``make bench`` runs ``tests/bench/test_fleet.py`` at 100 and 1,000 workloads
and is not part of ``make test``; this smoke run keeps its harness working.
It asserts what the figures must contain and the counts that do not depend on
timing (registry HEADs per steady cycle: only the distinct bases, one ImagePatch per
app on the pushed base, one ECR call per app image); never a duration.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.fleet import FleetSpec, format_table, only, run_fleet, write_results

pytestmark = pytest.mark.kwok


def test_fleet_bench_smoke(kube, crds, registry, moto_server, tmp_path) -> None:
    # Base 0 carries apps 0, 3, 6 and 9: each way of recording a lineage is among them.
    # It shares the session's cluster: watch only its own namespaces, so workloads other tests
    # left behind (namespaces still terminating) are not counted as the fleet's requests.
    spec = FleetSpec(workloads=50, namespaces=5, apps=12, bases=3, vulnerable_every=6, idle_seconds=5,
                     own_namespaces_only=True)
    result = run_fleet(kube, kube.audit_log, registry, moto_server, tmp_path, spec)
    print("\n" + format_table([result]))

    assert result["forbidden"] == []
    assert result["cycle"]["workloads"] == 50
    # The physical limit of a steady cycle: one HEAD per distinct base, nothing else. The
    # figures count only the fleet's own repositories: on the session's shared cluster the
    # bench operator also sees other tests' ImagePatches and policies (cluster-scoped) and
    # may resolve their images through the same proxy. A late workload event can re-resolve
    # its base alone, so each base is HEADed at least once and at most a few times, never
    # once per workload on it (16 or 17), and no app repository is HEADed at all.
    assert set(result["cycle"]["registry"]) == {"HEAD manifest"}, result["cycle"]["registry"]
    by_repo = result["cycle"]["heads_by_repository"]
    assert sorted(repo.rsplit("/", 1)[-1] for repo in by_repo) == ["base-0", "base-1", "base-2"], by_repo
    assert all(1 <= n <= 3 for n in by_repo.values()), by_repo
    # Cold: each base once, each app manifest once, and some configs.
    cold = result["registry_cold"]
    assert only(cold, "HEAD manifest") == 3 and only(cold, "GET manifest") == 12
    # A config is read when the manifest records no base: 12 apps less 0, 4 and 8.
    assert only(cold, "GET blob") == 9
    assert result["cycle"]["aws"].get("ecr:DescribeImageScanFindings") == 12
    assert result["fleet"]["waiting_patches"] == 2  # apps 5 and 11 have a CRITICAL finding
    # The push of base 0 opens a patch for each app on it, whatever records its lineage.
    assert (result["push"]["patches"], result["push"]["images"]) == (4, 4)
    assert result["rollout"]["phase"] == "Succeeded" and result["rollout"]["targets"] == 5
    assert result["rollback_seconds"] is not None
    for key in ("rss_idle_mb", "rss_peak_mb", "cpu_idle_s_per_min", "cpu_peak_s_per_min"):
        assert result["operator"][key] >= 0
    assert result["api_per_minute"]["idle_all"] > 0

    out = tmp_path / "bench-results.json"
    write_results(out, [result])
    written = json.loads(out.read_text())
    assert written["machine"]["cores"] >= 1 and written["runs"][0]["workloads"] == 50
    table = format_table([result])
    assert "50 wl" in table and "—" not in table.split("\n", 2)[2].split("push")[0]
