"""A tarpit registry costs its own policy a bounded time, and other policies nothing.

Given two policies, ``…-a`` (evaluated first) whose three workloads run
images (and follow bases) on ``tarpit.test``, and ``…-b`` with a healthy
outdated workload on the local registry; the operator started with short
bounds (``--registry-timeout 2``, ``--policy-pass-budget 3``,
``--registry-breaker-failures 2``); when ``tarpit.test`` becomes a tarpit
(30 s per request, ``tests/support/faultproxy.py``) and both policies are
asked to evaluate now, then:

* the tarpit's workloads are ``Unknown`` and every reason names
  ``tarpit.test``, and the containers the budget left are
  ``PassBudgetExceeded``;
* ``…-b`` is evaluated in the same pass and its outdated workload patched
  (both policies' pass times are printed: ``…-b`` starts within a few
  seconds of the pass, not after the tarpit);
* asked again, the tarpit's circuit breaker opens: its calls fail fast with
  ``RegistryCircuitOpen`` naming the host, and the breaker metric says open.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import _json_bytes, _push_platform_manifest, make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import OCI_MANIFEST, sha256_digest
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

TARPIT = "tarpit.test"
BUDGET = 3


@pytest.fixture(scope="module")
def tarpit(registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy.start(upstream=registry.host)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def detector(kube, crds, registry, tarpit, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("bounded-time")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        metrics=True,
        extra_args=["--registry-endpoint", f"{TARPIT}={tarpit.url}", "--detect-tick", "1",
                    "--registry-timeout", "2", "--policy-pass-budget", str(BUDGET),
                    "--registry-breaker-failures", "2", "--registry-breaker-cooldown", "120"],
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


def app_on(registry, repo: str, base_name: str, base_digest: str) -> str:
    """Push ``repo:1``, an image whose manifest records its base (as buildah would)."""
    manifest, _ = _push_platform_manifest(registry, repo, f"app-{repo}", "amd64", None, "oci")
    doc = json.loads(manifest)
    doc["annotations"] = {"org.opencontainers.image.base.name": base_name,
                          "org.opencontainers.image.base.digest": base_digest}
    body = _json_bytes(doc)
    registry.put_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    return registry.put_manifest(repo, "1", body, OCI_MANIFEST)


def state_of(given: Scenario, ns: str, name: str) -> dict:
    dep = given.get("deployment", name, ns)
    raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def retrigger(given: Scenario, *policies: str) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "imagepatchpolicy", *policies, "--overwrite",
                       f"imagepatch.dev/requestedAt={stamp}")


_EVALUATED = re.compile(
    r"policy (\S+): (\d+) workloads evaluated in ([0-9.]+)s in pass (\d+), started ([0-9.]+)s")


def passes(log: str) -> dict[int, dict[str, tuple[int, float, float]]]:
    """pass number -> {policy: (workloads, seconds, seconds into the pass)} from the log."""
    out: dict[int, dict[str, tuple[int, float, float]]] = {}
    for name, count, seconds, number, into in _EVALUATED.findall(log):
        out.setdefault(int(number), {})[name] = (int(count), float(seconds), float(into))
    return out


def test_a_tarpit_registry_makes_its_workloads_unknown_and_delays_no_other_policy(
    given, registry, tarpit, detector
) -> None:
    # Given: three apps on tarpit.test, each following its own base there (so no
    # answer is shared), healthy while the registry still answers.
    stem = unique("pol")
    slow, healthy = f"{stem}-a", f"{stem}-b"  # evaluated in this order
    given.policy(slow, baseImages={"checkInterval": "1h"})
    given.policy(healthy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    tarpitted = []
    for i in range(3):
        base = make_base_image(registry, unique("tbase"), "3.12", marker=f"t{i}")
        repo = unique("tapp")
        app_on(registry, repo, f"{TARPIT}/{base.name}:3.12", base.digest)
        given.deployment(ns, f"slow-{i}", image=f"{TARPIT}/{repo}:1", policy=slow, replicas=1)
        tarpitted.append(f"slow-{i}")
    # The healthy policy's app is built on a base that has moved since: outdated.
    base_repo = unique("base")
    base_v1 = make_base_image(registry, base_repo, "3.12", marker="v1")
    outdated = unique("app")
    app_on(registry, outdated, base_v1.ref, base_v1.digest)
    make_base_image(registry, base_repo, "3.12", marker="v2")
    given.deployment(ns, "outdated", image=f"{registry.host}/{outdated}:1", policy=healthy,
                     replicas=1)
    wait_for(lambda: all(state_of(given, ns, n).get("state") == "Compliant" for n in tarpitted),
             timeout=60, what="the tarpit policy's workloads evaluated while it still answers")

    # When: the registry becomes a tarpit, and both policies are asked to evaluate now.
    tarpit.tarpit(30.0)
    before = max(passes(detector.log()), default=0)

    def one_pass_with_both():
        for number, evaluated in sorted(passes(detector.log()).items(), reverse=True):
            if number > before and evaluated.get(slow, (0,))[0] == 3 \
                    and evaluated.get(healthy, (0,))[0] == 1:
                return number, evaluated
        retrigger(given, slow, healthy)
        return None

    number, evaluated = wait_for(one_pass_with_both, timeout=60, interval=2,
                                 what="one pass that evaluated both policies")
    print(f"pass {number}: policy {slow} (tarpit) took {evaluated[slow][1]:.2f}s "
          f"(started {evaluated[slow][2]:.2f}s into the pass); policy {healthy} took "
          f"{evaluated[healthy][1]:.2f}s (started {evaluated[healthy][2]:.2f}s into the pass)")

    # Then: the tarpit's workloads are Unknown, every reason naming the host; the
    # budget left some unevaluated, and said so.
    containers = []
    for name in tarpitted:
        state = state_of(given, ns, name)
        assert state["state"] == "Unknown", (name, state)
        containers += state["containers"]
    for container in containers:
        assert container["reason"] in ("RegistryUnavailable", "RegistryTimeout",
                                       "PassBudgetExceeded", "RegistryCircuitOpen"), container
        assert TARPIT in container["message"], container
    budgeted = [c for c in containers if c["reason"] == "PassBudgetExceeded"]
    assert budgeted, containers
    assert f"pass budget of {BUDGET}s" in budgeted[0]["message"]
    assert f"registry {TARPIT} was slow" in budgeted[0]["message"]

    # The healthy policy was evaluated in that pass, and its outdated workload patched.
    outdated_state = wait_for(
        lambda: state_of(given, ns, "outdated").get("state") in ("Patching", "BaseImageOutdated")
        and state_of(given, ns, "outdated"), timeout=30, what="the healthy workload evaluated")
    assert outdated_state["state"] == "Patching"
    patches = json.loads(given.kube.kubectl(
        "get", "imagepatches", "-l", f"imagepatch.dev/policy={healthy}", "-o", "json"))["items"]
    assert [p["spec"]["image"] for p in patches] == [f"{registry.host}/{outdated}"]

    # When asked again: two failed operations in a row open the host's breaker,
    # and its calls fail fast, naming it.
    def circuit_open():
        reasons = {c["reason"]: c["message"] for n in tarpitted
                   for c in state_of(given, ns, n).get("containers", [])}
        if "RegistryCircuitOpen" in reasons:
            return reasons["RegistryCircuitOpen"]
        retrigger(given, slow)
        return None

    message = wait_for(circuit_open, timeout=60, interval=2, what="the tarpit's breaker open")
    assert f"registry {TARPIT} is not answering" in message
    assert detector.metric("imagepatch_registry_breaker_state", host=TARPIT) == 2
    print(f"{TARPIT}: {tarpit.count()} requests reached the tarpit; breaker open: {message}")
