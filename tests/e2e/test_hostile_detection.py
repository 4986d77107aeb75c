"""Detection survives a hostile registry and bad annotations, on the real cluster.

Given two policies (``…-a`` and ``…-b``, evaluated in that order), a hostile
image (a gzip bomb from ``tests/support/hostile_registry.py``) among healthy
workloads under the first, a workload whose annotation is too long, and one
whose rebuild annotation no ImagePatch would admit; when a
pass evaluates them; then the healthy workloads of *both* policies are
evaluated in that same pass, the hostile and refused ones are ``Unknown``
with a reason naming the image or the annotation, each got one Warning Event, and no
ImagePatch exists for them, while the healthy outdated one got its patch.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest

from tests.support.hostile_registry import HostileRegistry
from tests.support.images import _json_bytes, _push_platform_manifest, make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import OCI_MANIFEST, sha256_digest
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

HOSTILE = "hostile.test"


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    registry = HostileRegistry.start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def detector(kube, crds, registry, hostile, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("hostile-detector")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{HOSTILE}={hostile.url}", "--detect-tick", "1"],
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


def app_on(registry, repo: str, base) -> str:
    """Push ``repo:1``, an image whose manifest records ``base`` (as buildah would)."""
    manifest, _ = _push_platform_manifest(registry, repo, f"app-{repo}", "amd64", None, "oci")
    doc = json.loads(manifest)
    doc["annotations"] = {"org.opencontainers.image.base.name": base.ref,
                          "org.opencontainers.image.base.digest": base.digest}
    body = _json_bytes(doc)
    registry.put_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    return registry.put_manifest(repo, "1", body, OCI_MANIFEST)


def state_of(given: Scenario, ns: str, name: str) -> dict:
    dep = given.get("deployment", name, ns)
    raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def retrigger(given: Scenario, *policies: str) -> None:
    """One `kubectl annotate` for both policies: evaluate them now."""
    stamp = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "imagepatchpolicy", *policies, "--overwrite",
                       f"imagepatch.dev/requestedAt={stamp}")


_EVALUATED = re.compile(r"policy (\S+): (\d+) workloads evaluated in ([0-9.]+)s in pass (\d+)")


def passes(log: str) -> dict[int, dict[str, tuple[int, float]]]:
    """pass number -> {policy: (workloads, seconds)} from the operator's log."""
    out: dict[int, dict[str, tuple[int, float]]] = {}
    for name, count, seconds, number in _EVALUATED.findall(log):
        out.setdefault(int(number), {})[name] = (int(count), float(seconds))
    return out


def test_a_hostile_image_and_bad_annotations_do_not_stop_the_pass(given, registry, detector) -> None:
    # Given: a base, and healthy apps built on it.
    base_repo = unique("base")
    base_v1 = make_base_image(registry, base_repo, "3.12", marker="v1")
    outdated_repo, current_repo, refused_repo = unique("app"), unique("app"), unique("app")
    app_on(registry, outdated_repo, base_v1)
    app_on(registry, refused_repo, base_v1)
    stem = unique("pol")
    first, second = f"{stem}-a", f"{stem}-b"  # evaluated in this order
    # Any CodeBuild project is allowed, so only its length (over the CRD's 512) refuses the one below.
    given.policy(first, baseImages={"checkInterval": "1h"},
                 rebuild={"strategy": "external", "allowed": {
                     "strategies": ["external", "codebuild"], "codebuildProjects": ["*"]}})
    given.policy(second, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    given.deployment(ns, "healthy", image=f"{registry.host}/{outdated_repo}:1", policy=first, replicas=1)
    given.deployment(ns, "hostile", image=f"{HOSTILE}/gzip-bomb/x:1", policy=first, replicas=1)
    # The bad annotations come with the workloads: a pass between a create and a later
    # `kubectl annotate` would rightly open a patch for a workload that had none yet.
    given.deployment(ns, "refused", image=f"{registry.host}/{refused_repo}:1", policy=first, replicas=1,
                     annotations={"imagepatch.dev/rebuild": "codebuild:" + "p" * 600})  # the CRD allows 512
    given.deployment(ns, "long", image=f"{registry.host}/{outdated_repo}:1", policy=first, replicas=1,
                     annotations={"imagepatch.dev/base-image": f"{registry.host}/{'x' * 2000}:1"})
    # The second policy's healthy workload is built on the base as it will be.
    base_v2 = make_base_image(registry, base_repo, "3.12", marker="v2")
    app_on(registry, current_repo, base_v2)
    given.deployment(ns, "other", image=f"{registry.host}/{current_repo}:1", policy=second, replicas=1)

    # When: both policies are asked to evaluate now, until one pass did both.
    def one_pass_with_both():
        seen = passes(detector.log())
        for number, evaluated in sorted(seen.items(), reverse=True):
            if evaluated.get(first, (0,))[0] == 4 and evaluated.get(second, (0,))[0] == 1:
                return number, evaluated
        retrigger(given, first, second)
        return None

    number, evaluated = wait_for(one_pass_with_both, timeout=90, interval=3,
                                 what="one pass that evaluated both policies")
    print(f"pass {number}: policy {first} (4 workloads, one hostile image) took "
          f"{evaluated[first][1]:.2f}s; policy {second} took {evaluated[second][1]:.2f}s")

    # Then: the healthy workloads of both policies were evaluated.
    healthy = wait_for(lambda: state_of(given, ns, "healthy").get("state") in ("Patching", "BaseImageOutdated")
                       and state_of(given, ns, "healthy"), timeout=30, what="healthy evaluated")
    assert healthy["state"] == "Patching"
    assert state_of(given, ns, "other")["state"] == "Compliant"

    # The hostile image is Unknown, with a reason that names it and what was wrong.
    hostile = state_of(given, ns, "hostile")
    assert hostile["state"] == "Unknown"
    [container] = hostile["containers"]
    assert container["reason"] == "InvalidRegistryResponse"
    assert "gzip-bomb" in container["message"] and "limit" in container["message"]

    # A rebuild annotation no ImagePatch admits (a project over the CRD's 512) is refused
    # for its workload before any ImagePatch is written (issue 20, item 3).
    refused = state_of(given, ns, "refused")
    assert refused["state"] == "Unknown"
    assert refused["containers"][0]["reason"] == "InvalidAnnotation"
    assert "imagepatch.dev/rebuild" in refused["containers"][0]["message"]

    # The over-long annotation is refused, never parsed.
    long = state_of(given, ns, "long")
    assert long["state"] == "Unknown"
    assert long["containers"][0]["reason"] == "InvalidAnnotation"
    assert "imagepatch.dev/base-image" in long["containers"][0]["message"]

    # Patches: only for the healthy outdated image.
    patches = json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={first}",
                                            "-o", "json"))["items"]
    assert [p["spec"]["image"] for p in patches] == [f"{registry.host}/{outdated_repo}"]

    # One Warning Event for each workload that went Unknown.
    for name in ("hostile", "refused", "long"):
        warnings = [e for e in given.events(ns, name) if e["type"] == "Warning" and e["reason"] == "Unknown"]
        assert len(warnings) == 1, (name, warnings)
        assert sum(e.get("count", 1) for e in warnings) == 1, (name, warnings)
