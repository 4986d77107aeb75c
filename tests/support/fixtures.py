"""pytest fixtures for the real test components; load with
``pytest_plugins = ["tests.support.fixtures"]``.

Session fixtures (started once, on first use, stopped at the end):

* ``registry`` -> ``LocalRegistry``: Debian's docker-registry on a free
  loopback port, or the registry named by ``IMAGEPATCH_TEST_REGISTRY=host:port``.
* ``moto_server`` -> ``MotoServer``: moto in server mode, as a subprocess.
* ``buildah`` -> ``Buildah``: buildah with private storage and config, pushing
  to ``registry``.
* ``git_server`` -> ``GitServer``: ``git http-backend`` behind basic auth.

* ``argo_rollouts`` -> ``ArgoRollouts``: Argo Rollouts' real controller and
  CRDs on the local cluster (built by tests/cluster/build-argo-rollouts.sh).
* ``argocd`` -> ``ArgoCD``: Argo CD's application-controller, repo-server and
  their Redis on the local cluster (built by tests/cluster/build-argocd.sh).

Function fixture:

* ``aws`` -> the same ``MotoServer``, reset before the test, so every test
  starts with empty AWS state.

Logs (registry.log, moto.log, buildah.log) stay under pytest's basetemp
(``/tmp/pytest-of-$USER/pytest-N/``) for the last few runs; failures quote
their tail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.argo import ArgoRollouts
from tests.support.argocd import ArgoCD, build_argocd
from tests.support.cosign import Cosign, build_cosign
from tests.support.gitserver import GitServer
from tests.support.images import Buildah
from tests.support.moto import MotoServer
from tests.support.registry import LocalRegistry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry.from_env()
    if reg is None:
        # A missing binary is an error, not a skip: these tests exist to prove
        # the real stack works, and a silent skip would hide a broken machine.
        reg = LocalRegistry.start(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer.start(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def buildah(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    builder = Buildah(registry, tmp_path_factory.mktemp("buildah"))
    try:
        yield builder
    finally:
        builder.cleanup()


@pytest.fixture(scope="session")
def cosign(tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    """The real cosign (tests/cluster/build-cosign.sh), with its own HOME and work folder."""
    return Cosign(build_cosign(), tmp_path_factory.mktemp("cosign"))


@pytest.fixture(scope="session")
def argo_rollouts(kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoRollouts]:
    """Argo Rollouts' controller, started once and shared (local cluster only: it installs
    CRDs and a cluster-wide controller)."""
    if not kube.kwok:
        pytest.skip("Argo Rollouts is started only on the local test cluster")
    argo = ArgoRollouts(kube=kube, log_path=tmp_path_factory.mktemp("argo") / "rollouts.log")
    argo.start()
    try:
        yield argo
    finally:
        argo.stop()


@pytest.fixture(scope="session")
def argocd(kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    """Argo CD, started once per session (per xdist worker) and shared; skipped only when it
    cannot be built (a cold build took 4.6 min on 2 idle cores, 17 min on busy ones)."""
    if not kube.kwok:
        pytest.skip("Argo CD is started only on the local test cluster")
    try:
        build_argocd()
    except RuntimeError as exc:
        pytest.skip(f"Argo CD could not be built: {str(exc)[-500:]}")
    started = time.monotonic()
    running = ArgoCD.start(kube, tmp_path_factory.mktemp("argocd"))
    print(f"\n[argocd] redis, repo-server and application-controller ready in "
          f"{time.monotonic() - started:.1f}s")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A real Git smart-HTTP server (git http-backend) with basic auth (tests/support/gitserver.py)."""
    server = GitServer.start(tmp_path_factory.mktemp("git-server"))
    try:
        yield server
    finally:
        server.stop()
