"""Flux's source-controller and kustomize-controller, run against the test cluster.

``build_flux()`` builds both (tests/cluster/build-flux.sh, cached; minutes
when cold) and returns the folder with the binaries and Flux's CRDs.
``Flux.start(kube, work)`` installs the CRDs and starts both controllers as
processes on loopback with free ports. They are third-party test components
(Flux delivers apps, as it would in a user's cluster), not the operator, so
they run with the cluster's admin kubeconfig.

source-controller fetches GitRepositories and serves each revision as an
artifact over HTTP (``--storage-addr``; ``--storage-adv-addr`` is the address
written into the artifact's URL); kustomize-controller downloads the artifact
from there and applies it with server-side apply.

``Flux.deliver_repo(git_server, namespace, files)`` is what the GitOps e2e
modules share: a new repository on the test Git server holding ``files``,
delivered into ``namespace`` by a GitRepository and a Kustomization
(``apps``), waited for until applied.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.gitserver import GitServer
from tests.support.ports import ServerProcess, free_port, http_ok
from tests.support.scenario import unique
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]


def build_flux() -> Path:
    """The folder of the Flux binaries and CRDs, built on first use (cached)."""
    build = subprocess.run(
        ["bash", str(REPO / "tests" / "cluster" / "build-flux.sh")],
        capture_output=True, text=True, timeout=3600,
    )
    if build.returncode != 0:
        raise RuntimeError(f"tests/cluster/build-flux.sh failed:\n{build.stderr[-3000:]}")
    return Path(build.stdout.strip().splitlines()[-1])


@dataclass
class Flux:
    kube: Any
    source: ServerProcess
    kustomize: ServerProcess

    @classmethod
    def start(cls, kube: Any, work: Path, *, no_cross_namespace_refs: bool = True) -> Flux:
        flux = build_flux()
        kube.kubectl("apply", "--server-side", "-f", str(flux / "crds"))
        for crd in ("gitrepositories.source.toolkit.fluxcd.io",
                    "kustomizations.kustomize.toolkit.fluxcd.io"):
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
               "RUNTIME_NAMESPACE": "flux-system"}
        storage = work / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        storage_port = free_port()

        def source_argv(port: int) -> list[str]:
            return [str(flux / "source-controller"),
                    f"--health-addr=127.0.0.1:{port}", f"--metrics-addr=127.0.0.1:{free_port()}",
                    f"--storage-path={storage}", f"--storage-addr=127.0.0.1:{storage_port}",
                    f"--storage-adv-addr=127.0.0.1:{storage_port}",
                    "--enable-leader-election=false", "--log-level=info"]

        def kustomize_argv(port: int) -> list[str]:
            argv = [str(flux / "kustomize-controller"),
                    f"--health-addr=127.0.0.1:{port}", f"--metrics-addr=127.0.0.1:{free_port()}",
                    "--enable-leader-election=false", "--log-level=info"]
            if no_cross_namespace_refs:
                argv.append("--no-cross-namespace-refs=true")
            return argv

        def ready(port: int) -> bool:
            return http_ok(f"http://127.0.0.1:{port}/readyz", ok=lambda r: r.status_code == 200)

        source = ServerProcess.start("source-controller", source_argv, ready,
                                     work / "source-controller.log", timeout=90, env=env)
        try:
            kustomize = ServerProcess.start("kustomize-controller", kustomize_argv, ready,
                                            work / "kustomize-controller.log", timeout=90, env=env)
        except Exception:
            source.stop()
            raise
        return cls(kube, source, kustomize)

    def stop(self) -> None:
        self.kustomize.stop()
        self.source.stop()

    # --- what a user applies ------------------------------------------------------------------

    def deliver(self, namespace: str, name: str, *, url: str, user: str, password: str,
                path: str = "./", interval: str = "10s") -> None:
        """A basic-auth Secret, a GitRepository and a Kustomization applying ``path`` of ``url``."""
        docs = [
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": f"{name}-git", "namespace": namespace},
             "data": {"username": base64.b64encode(user.encode()).decode(),
                      "password": base64.b64encode(password.encode()).decode()}},
            {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
             "metadata": {"name": name, "namespace": namespace},
             "spec": {"url": url, "interval": interval, "ref": {"branch": "main"},
                      "secretRef": {"name": f"{name}-git"}}},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
             "metadata": {"name": name, "namespace": namespace},
             "spec": {"interval": interval, "path": path, "prune": True,
                      "targetNamespace": namespace,
                      "sourceRef": {"kind": "GitRepository", "name": name}}},
        ]
        self.kube.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def ready_revision(self, kind: str, namespace: str, name: str) -> str:
        """The revision ``kind``/``name`` last reconciled with Ready=True, or ""."""
        raw = self.kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if not raw:
            return ""
        status = json.loads(raw).get("status") or {}
        ready = [c for c in status.get("conditions") or []
                 if c.get("type") == "Ready" and c.get("status") == "True"]
        if not ready:
            return ""
        if kind == "gitrepository":
            return (status.get("artifact") or {}).get("revision", "")
        return status.get("lastAppliedRevision", "")

    def wait_applied(self, namespace: str, name: str, commit: str, timeout: float = 120) -> str:
        """Wait until the Kustomization applied ``commit``; its revision (``main@sha1:<commit>``)."""
        def applied() -> str | None:
            revision = self.ready_revision("kustomization", namespace, name)
            return revision if revision.endswith(commit) else None

        try:
            return wait_for(applied, timeout=timeout, what=f"Kustomization {namespace}/{name} "
                            f"to apply {commit}")
        except TimeoutError as exc:
            objects = self.kube.kubectl("get", "gitrepository,kustomization", "-n", namespace,
                                        "-o", "yaml", check=False)
            raise TimeoutError(f"{exc}\n{objects[-3000:]}\nsource-controller:\n"
                               f"{self.source.tail(20)}\nkustomize-controller:\n"
                               f"{self.kustomize.tail(20)}") from None

    def deliver_repo(self, git_server: GitServer, namespace: str, files: dict[str, str], *,
                     path: str = "./deploy", repo: str = "") -> tuple[str, str]:
        """A new repository (``repo``, or a unique name) holding ``files``, applied into
        ``namespace`` by Kustomization ``apps`` (``path``); (its name, the commit applied)."""
        repo = repo or unique("app")
        git_server.create_repo(repo)
        commit = git_server.commit(repo, files, "the app")
        started = time.monotonic()
        self.deliver(namespace, "apps", url=git_server.repo_url(repo), user=git_server.user,
                     password=git_server.password, path=path)
        revision = self.wait_applied(namespace, "apps", commit)
        print(f"\n[flux] {revision} fetched and applied in {time.monotonic() - started:.1f}s")
        return repo, commit
