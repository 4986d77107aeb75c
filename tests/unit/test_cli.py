"""``imagepatch run``'s arguments become the operator's Options."""

from __future__ import annotations

import logging

import pytest

from imagepatch.cli import build_parser, options_from_args


def options(*argv: str):
    return options_from_args(build_parser().parse_args(["run", *argv]))


def test_builds_run_in_their_own_namespace_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEPATCH_BUILD_NAMESPACE", raising=False)
    opts = options("--operator-namespace", "imagepatch-system")
    assert opts.build_namespace == "imagepatch-builds"
    assert opts.build_namespace != opts.operator_namespace


def test_build_namespace_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEPATCH_BUILD_NAMESPACE", "from-env")
    assert options().build_namespace == "from-env"
    assert options("--build-namespace", "ci-builds").build_namespace == "ci-builds"


def test_building_in_the_operator_namespace_is_allowed_but_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("IMAGEPATCH_BUILD_NAMESPACE", raising=False)
    with caplog.at_level(logging.WARNING, logger="imagepatch.cli"):
        opts = options("--operator-namespace", "ops", "--build-namespace", "ops")
    assert opts.build_namespace == "ops"
    assert "operator's own namespace ops" in caplog.text


def test_registry_endpoints_are_host_equals_url() -> None:
    opts = options("--registry-endpoint", "registry.example.com=https://mirror.example.com")
    assert opts.registry_endpoints == {"registry.example.com": "https://mirror.example.com"}
    with pytest.raises(SystemExit, match="HOST=URL"):
        options("--registry-endpoint", "registry.example.com")


def test_kube_timeout_and_registry_cache_budget_default_and_can_be_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGEPATCH_KUBE_REQUEST_TIMEOUT", raising=False)
    monkeypatch.delenv("IMAGEPATCH_REGISTRY_CACHE_SIZE", raising=False)
    opts = options()
    assert (opts.kube_request_timeout, opts.registry_cache_bytes) == (60.0, 64 * 2**20)
    opts = options("--kube-request-timeout", "7.5", "--registry-cache-size", "512Ki")
    assert (opts.kube_request_timeout, opts.registry_cache_bytes) == (7.5, 512 * 1024)
    monkeypatch.setenv("IMAGEPATCH_REGISTRY_CACHE_SIZE", "0")
    monkeypatch.setenv("IMAGEPATCH_KUBE_REQUEST_TIMEOUT", "12")
    opts = options()
    assert (opts.kube_request_timeout, opts.registry_cache_bytes) == (12.0, 0)


@pytest.mark.parametrize(("text", "size"), [("1048576", 2**20), ("500k", 500_000), ("500K", 500_000),
                                            ("64Mi", 64 * 2**20), ("1Gi", 2**30), ("2M", 2_000_000)])
def test_sizes_are_written_as_kubernetes_quantities(text: str, size: int) -> None:
    from imagepatch.cli import byte_size

    assert byte_size(text) == size


@pytest.mark.parametrize("argv", [("--registry-cache-size", "lots"), ("--registry-cache-size", "-1Mi"),
                                  ("--registry-cache-size", "1.5Gi"), ("--kube-request-timeout", "0"),
                                  ("--kube-request-timeout", "soon")])
def test_a_bad_size_or_timeout_is_refused(argv: tuple[str, str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", *argv])


def test_bounded_time_flags_default_and_can_be_set() -> None:
    opts = options()
    assert (opts.registry_timeout, opts.registry_max_in_flight, opts.registry_breaker_failures,
            opts.registry_breaker_cooldown, opts.policy_pass_budget) == (30.0, 4, 5, 30.0, 60.0)
    opts = options("--registry-timeout", "2", "--registry-max-in-flight", "8",
                   "--registry-breaker-failures", "3", "--registry-breaker-cooldown", "90",
                   "--policy-pass-budget", "10")
    assert (opts.registry_timeout, opts.registry_max_in_flight, opts.registry_breaker_failures,
            opts.registry_breaker_cooldown, opts.policy_pass_budget) == (2.0, 8, 3, 90.0, 10.0)


@pytest.mark.parametrize("argv", [("--registry-max-in-flight", "0"), ("--registry-max-in-flight", "x"),
                                  ("--registry-breaker-failures", "-1"), ("--policy-pass-budget", "0"),
                                  ("--registry-breaker-cooldown", "never")])
def test_a_bad_bound_is_refused(argv: tuple[str, str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", *argv])


def test_argo_rollouts_are_targets_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEPATCH_ARGO_ROLLOUTS", raising=False)
    assert options().argo_rollouts is False
    assert options("--argo-rollouts").argo_rollouts is True
    monkeypatch.setenv("IMAGEPATCH_ARGO_ROLLOUTS", "true")
    assert options().argo_rollouts is True


def test_flagger_canaries_gate_deployments_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEPATCH_FLAGGER", raising=False)
    assert options().flagger is False
    assert options("--flagger").flagger is True
    monkeypatch.setenv("IMAGEPATCH_FLAGGER", "true")
    assert options().flagger is True
