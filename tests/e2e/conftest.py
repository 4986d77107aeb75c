"""End-to-end fixtures: the operator as a process, under its shipped RBAC."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.operator import (
    OperatorProcess,
    install_rbac,
    operator_running,
    service_account_kubeconfig,
)
from tests.support.scenario import Scenario


@pytest.fixture(scope="module")
def operator(kube, crds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator running with a token of the deploy/ ServiceAccount.

    Any 403 in its log fails the module's tests at teardown: a permission the
    operator needs but deploy/ does not grant is a bug users would hit.
    """
    with operator_running(kube, tmp_path_factory.mktemp("operator"), extra_args=()) as proc:
        yield proc


@pytest.fixture
def given(kube, operator: OperatorProcess) -> Iterator[Scenario]:
    """A scenario against the module's ``operator`` (a module may run its own as ``operator``);
    its namespaces are deleted after the test."""
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


@pytest.fixture
def operator_factory(kube, crds, tmp_path: Path) -> Iterator[Callable[[], OperatorProcess]]:
    """Start operator processes on demand (for kill/restart scenarios); all share one log."""
    install_rbac(kube)
    kubeconfig = service_account_kubeconfig(kube, tmp_path / "operator.kubeconfig")
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        proc = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "operator.log", metrics=True)
        proc.start()
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
    forbidden = started[0].forbidden_lines() if started else []
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])
