"""Credentials and reach stay per policy (issue 20, item 5), on the real cluster.

One operator, run as it is shipped but **without** the tests' usual
allowance for loopback registries: it reaches loopback only through the
registries an admin named (``--registry-endpoint`` mirrors), as on a real
cluster where tenants name images and registries answer with realms.

* Team P's policy names a Secret for a private registry (docker-registry with
  htpasswd); team Q's names none. A workload under Q that names P's private
  image, by tag or by the digest P's workload runs, is ``Unknown`` with
  ``RegistryAuthFailed`` and learns no digest; P's workload is evaluated.
* A workload whose registry host is ``localhost`` (the session registry's
  port) is ``Unknown`` with ``RegistryAddressRefused``, naming the host and
  the loopback address it resolves to.
* A registry (an admin-named mirror) whose Bearer realm is ``127.1``, a name
  that resolves to 127.0.0.1 but is no address literal, is refused likewise.

On today's main each fails: the Secrets of all policies are merged by host (Q
reads P's image), loopback registries are always reached, and a realm is
checked only by its literal host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.hostile_registry import HostileRegistry
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import start_htpasswd_registry
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

PRIVATE = "private.test"  # team P's registry, as images name it (a mirror to the local one)
HOSTILE = "hostile.test"  # a registry someone else runs
USER, PASSWORD = "team-p", "pw-Tenancy-9d3a71"


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    reg = start_htpasswd_registry(tmp_path_factory.mktemp("tenancy-private"), USER, PASSWORD)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry.start()
    # Its realm: a name that resolves to loopback without being an address literal.
    server.realm_target = f"http://127.1:{server.url.rsplit(':', 1)[1]}"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(kube, crds, private_registry, hostile, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("tenancy-operator")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{PRIVATE}=http://{private_registry.host}",
                    "--registry-endpoint", f"{HOSTILE}={hostile.url}", "--detect-tick", "1"],
        allow_loopback=False,
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def state_of(given: Scenario, ns: str, name: str) -> dict:
    dep = given.get("deployment", name, ns)
    raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def wait_state(given: Scenario, ns: str, name: str, *states: str, timeout: float = 60) -> dict:
    def probe():
        st = state_of(given, ns, name)
        return st if st.get("state") in states else None

    try:
        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{ns}/{name} in {states}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast state: {json.dumps(state_of(given, ns, name))}") from None


def test_a_team_cannot_read_another_teams_private_image_through_the_operator(
    given, private_registry, operator
) -> None:
    repo = unique("team-p/app")
    image = make_base_image(private_registry, repo, "1", marker="team-p")
    secret, team_p, team_q = unique("team-p-creds"), unique("team-p"), unique("team-q")
    manifest = given.kube.kubectl(
        "create", "secret", "docker-registry", secret, "-n", "imagepatch-system",
        f"--docker-server={PRIVATE}", f"--docker-username={USER}",
        f"--docker-password={PASSWORD}", "--dry-run=client", "-o", "json",
    )  # fmt: skip
    given.kube.kubectl("apply", "-f", "-", input=manifest)
    given.policy(team_p, registryCredentials={"secretName": secret})
    given.policy(team_q)
    ns_p, ns_q = given.namespace("team-p"), given.namespace("team-q")

    # Given team P's workload runs its private image, and the operator has read it.
    given.deployment(ns_p, "web", image=f"{PRIVATE}/{repo}:1", policy=team_p, replicas=1)
    mine = wait_state(given, ns_p, "web", "Compliant")
    assert mine["containers"][0]["digest"] == image.digest

    # When team Q names the same image, by tag and by the digest P's workload runs,
    given.deployment(ns_q, "tag", image=f"{PRIVATE}/{repo}:1", policy=team_q, replicas=1)
    given.deployment(ns_q, "pinned", image=f"{PRIVATE}/{repo}@{image.digest}", policy=team_q,
                     replicas=1)  # fmt: skip

    # then both are Unknown for want of credentials, and the tag's digest is not revealed.
    by_tag = wait_state(given, ns_q, "tag", "Unknown", "Compliant")
    pinned = wait_state(given, ns_q, "pinned", "Unknown", "Compliant")
    print(f"team Q by tag: {json.dumps(by_tag)}\nteam Q pinned: {json.dumps(pinned)}")
    for state in (by_tag, pinned):
        assert state["state"] == "Unknown"
        assert state["containers"][0]["reason"] == "RegistryAuthFailed"
    assert image.digest not in json.dumps(by_tag)
    assert not pinned["containers"][0].get("baseDigest")
    # P's workload is still evaluated with P's Secret, and no password is shown anywhere.
    assert wait_state(given, ns_p, "web", "Compliant")["containers"][0]["digest"] == image.digest
    assert PASSWORD not in operator.log()


def test_a_registry_named_localhost_is_refused_naming_host_and_address(
    given, registry, operator
) -> None:
    repo = unique("reach")
    make_base_image(registry, repo, "1", marker="reach")
    port = registry.host.rsplit(":", 1)[1]
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    given.deployment(ns, "local", image=f"localhost:{port}/{repo}:1", policy=policy, replicas=1)

    state = wait_state(given, ns, "local", "Unknown", "Compliant")
    print(json.dumps(state))
    [container] = state["containers"]
    assert state["state"] == "Unknown"
    assert container["reason"] == "RegistryAddressRefused"
    assert "localhost resolves to 127.0.0.1, a loopback address" in container["message"] or (
        "localhost resolves to ::1, a loopback address" in container["message"]
    )


def test_a_realm_whose_name_resolves_to_loopback_is_refused(given, hostile, operator) -> None:
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    before = len(hostile.requests)
    given.deployment(ns, "realm", image=f"{HOSTILE}/realm-at/x:1", policy=policy, replicas=1)

    state = wait_state(given, ns, "realm", "Unknown", "Compliant")
    print(json.dumps(state))
    [container] = state["containers"]
    assert state["state"] == "Unknown"
    assert container["reason"] == "InvalidRegistryResponse"
    assert "token realm http://127.1:" in container["message"]
    assert "127.1 resolves to 127.0.0.1, a loopback address" in container["message"]
    # The realm was never asked for a token.
    assert not any(p.startswith("/token/") for _, p in hostile.requests[before:])
