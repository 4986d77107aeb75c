"""Session-wide fixtures: the Kubernetes API server every layer of tests talks to.

``kube`` is a real control plane built and started by ``tests/cluster/``
(etcd, kube-apiserver with RBAC, controller-manager, scheduler and kwok), or,
when ``IMAGEPATCH_TEST_KUBECONFIG`` names a kubeconfig, that existing cluster
(kind, EKS, ...). Tests marked ``kwok`` need kwok's simulated pod behaviours
and are skipped on an external cluster; nothing else is.

The registry, moto and buildah fixtures live in ``tests/support/fixtures.py``.

Under pytest-xdist (``make test`` runs two workers) each worker is its own
session: its own control plane on free ports, state under its own basetemp
(``.../popen-gwN/``), its own registry, moto and buildah storage. Nothing a
session starts is shared with another worker, so tests written for one
session stay correct. An external cluster is the exception: two workers'
operators would reconcile each other's objects there, so it takes ``-n0``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.support.fixtures"]

EXTERNAL_KUBECONFIG = os.environ.get("IMAGEPATCH_TEST_KUBECONFIG")


@dataclass
class Kube:
    """An API server with admin credentials, and a kubectl that talks to it."""

    kubeconfig: Path
    kubectl_bin: str
    kwok: bool
    # The local API server's audit log of the operator's requests; None on an
    # external cluster.
    audit_log: Path | None = None
    # The local control plane (None on an external cluster): tests that restart
    # its kube-apiserver use it.
    cluster: Any = None

    @property
    def api_client(self):  # -> kubernetes.client.ApiClient
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        res = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout


def pytest_configure(config: pytest.Config) -> None:
    workers = getattr(config.option, "numprocesses", None) or 0
    if EXTERNAL_KUBECONFIG and not hasattr(config, "workerinput") and int(workers) > 1:
        raise pytest.UsageError(
            f"IMAGEPATCH_TEST_KUBECONFIG with {workers} xdist workers: each worker runs its own "
            "operators, and on one shared cluster they would reconcile each other's objects; "
            "run with -n0 (make test does when IMAGEPATCH_TEST_KUBECONFIG is set)"
        )


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    if EXTERNAL_KUBECONFIG:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            from tests.cluster.harness import build_binaries

            kubectl = str(build_binaries() / "kubectl")
        yield Kube(kubeconfig=Path(EXTERNAL_KUBECONFIG), kubectl_bin=kubectl, kwok=False)
        return

    from tests.cluster.harness import LocalCluster, build_binaries

    cluster = LocalCluster(state_dir=tmp_path_factory.mktemp("cluster"), bin_dir=build_binaries())
    cluster.start()
    try:
        yield Kube(kubeconfig=cluster.kubeconfig, kubectl_bin=str(cluster.bin_dir / "kubectl"),
                   kwok=True, audit_log=cluster.audit_log, cluster=cluster)
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def crds(kube: Kube) -> list[str]:
    """The imagepatch CRDs, installed and Established (left installed at the end)."""
    from tests.support.crds import install_crds

    return install_crds(kube)


@pytest.fixture(autouse=True)
def _skip_kwok_only_on_external_cluster(request: pytest.FixtureRequest) -> None:
    if EXTERNAL_KUBECONFIG and request.node.get_closest_marker("kwok"):
        pytest.skip("needs kwok's simulated pod behaviours (local cluster only)")
