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
