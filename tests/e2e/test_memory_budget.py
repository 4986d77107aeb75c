"""Registry reads cost the operator no more memory than its cache budget (issue 21, item 3).

Given a registry serving 60 image manifests of almost 4 MiB each (the most
the client reads) and one Deployment with 60 containers running them; when
detection evaluates it; then the operator's peak resident memory rises by
no more than its registry cache budget (``--registry-cache-size``, 64 MiB by
default) plus the working memory of reading one manifest, although the
manifests add up to about 230 MiB. Before the budget in bytes, the cache
kept up to 2,048 entries of any size: all 60 stayed in memory.

Figures are printed: the peak and current RSS before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import _json_bytes, _push_platform_manifest
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import OCI_MANIFEST
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

CONTAINERS = 60
MANIFEST_BYTES = 4 * 1024 * 1024 - 64 * 1024  # under the 4 MiB the client and registry accept
BUDGET_MIB = 64
# Reading, checking and parsing one manifest (the response, its JSON) and the
# interpreter's own growth: what a pass needs beyond what the cache keeps.
WORKING_MIB = 40


@pytest.fixture(scope="module")
def detector(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("memory-budget")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--detect-tick", "1"],
        # The environment's spelling of --registry-cache-size, as a chart would set it.
        extra_env={"IMAGEPATCH_REGISTRY_CACHE_SIZE": f"{BUDGET_MIB}Mi"},
        verbose=False,
        metrics=True,
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, detector) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def rss_mib(proc: OperatorProcess) -> tuple[float, float]:
    """(current, peak) resident memory of the operator process, in MiB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def push_large_manifests(registry, repo: str, count: int) -> list[str]:
    """Tags ``t0``..``t{count-1}`` of ``repo``, each a distinct manifest of ~MANIFEST_BYTES."""
    manifest, _ = _push_platform_manifest(registry, repo, "large", "amd64", None, "oci")
    doc = json.loads(manifest)
    tags = []
    for i in range(count):
        filler = (f"{i:04d}" * (MANIFEST_BYTES // 4))[: MANIFEST_BYTES - len(manifest) - 200]
        body = _json_bytes({**doc, "annotations": {"dev.imagepatch.test/filler": filler}})
        registry.put_manifest(repo, f"t{i}", body, OCI_MANIFEST)
        tags.append(f"t{i}")
    return tags


def test_sixty_4mib_manifests_raise_peak_rss_by_no_more_than_the_cache_budget(
    given, registry, detector
) -> None:
    repo = unique("large")
    tags = push_large_manifests(registry, repo, CONTAINERS)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    detector.wait_passes(2)  # the operator is idle and settled
    before_rss, before_peak = rss_mib(detector)

    given.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "wide", "namespace": ns,
                     "annotations": {"imagepatch.dev/policy": policy}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "wide"}},
                 "template": {"metadata": {"labels": {"app": "wide"}}, "spec": {"containers": [
                     {"name": f"c{i}", "image": f"{registry.host}/{repo}:{tag}"}
                     for i, tag in enumerate(tags)]}}},
    })

    def evaluated():
        dep = given.get("deployment", "wide", ns)
        raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
        return json.loads(raw) if raw else None

    state = wait_for(evaluated, timeout=120, interval=1, what="the 60-container workload evaluated")
    after_rss, after_peak = rss_mib(detector)
    digests = {c["digest"] for c in state["containers"]}
    print(f"{CONTAINERS} manifests of {MANIFEST_BYTES / 2**20:.2f} MiB "
          f"({CONTAINERS * MANIFEST_BYTES / 2**20:.0f} MiB in all), cache budget {BUDGET_MIB} MiB: "
          f"RSS {before_rss:.1f} -> {after_rss:.1f} MiB, peak {before_peak:.1f} -> "
          f"{after_peak:.1f} MiB (+{after_peak - before_peak:.1f} MiB)")
    assert len(state["containers"]) == CONTAINERS
    assert len(digests) == CONTAINERS  # every manifest was read: each has its own digest
    assert after_peak - before_peak <= BUDGET_MIB + WORKING_MIB
