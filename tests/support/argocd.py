"""Argo CD's application-controller and repo-server, run against the test cluster.

``build_argocd()`` builds Argo CD (tests/cluster/build-argocd.sh, cached;
about 5 min when cold on 2 idle cores, 17 on busy ones) and returns the folder with the ``argocd`` binary, its
role symlinks and the CRDs. ``ArgoCD.start(kube, work)`` installs the CRDs,
the ``argocd`` namespace with what Argo CD's own install puts there
(``argocd-cm``, ``argocd-secret``, the ``default`` AppProject), and starts
three processes on loopback with free ports:

- ``redis-server`` (Debian's, installed by .ci/setup): both Argo CD processes
  keep their caches in Redis and have no in-memory mode;
- ``argocd-repo-server``: clones the Git repositories (the ``git`` binary,
  credentials through ``GIT_ASKPASS=argocd``, so the bin folder is on its
  PATH) and renders them; a Helm chart with the ``helm`` that
  tests/cluster/build-helm.sh builds, a kustomization with the ``kustomize``
  that tests/cluster/build-kustomize.sh builds (both put on its PATH);
- ``argocd-application-controller``: compares each Application with the
  cluster and, with automated sync, applies it.

They are third-party test components (Argo CD delivers apps, as it would in a
user's cluster), not the operator, so they run with the cluster's admin
kubeconfig, like Flux (tests/support/flux.py). ``ARGOCD_FAKE_IN_CLUSTER``
makes the in-cluster destination (``https://kubernetes.default.svc``) use that
kubeconfig, as Argo CD's own local development setup (its Procfile) does.

Argo CD notices a new commit when it compares an Application again: every
``timeout.reconciliation`` (``ARGOCD_RECONCILIATION_TIMEOUT``, default 180 s,
which also bounds how long the repo-server caches a branch's head) plus up
to ``ARGOCD_RECONCILIATION_JITTER`` (default 60 s), or at once on a webhook or
the ``argocd.argoproj.io/refresh`` annotation. The tests set both to what
``reconcile`` asks (10 s, no jitter) to stay short.

``ArgoCD.deliver_repo(git_server, namespace, files)`` is what the GitOps e2e
modules share: a new repository on the test Git server holding ``files``,
delivered into ``namespace`` by an Application with automated sync, waited
for until synced.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import controller
from tests.support.gitserver import GitServer
from tests.support.ports import ServerProcess, free_port, http_ok
from tests.support.scenario import unique
from tests.support.wait import wait_for

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
NAMESPACE = "argocd"  # Argo CD's own namespace: its settings, Applications, repositories
IN_CLUSTER = "https://kubernetes.default.svc"


def build_argocd() -> Path:
    """The folder of the ``argocd`` binary, its role symlinks and CRDs (built on first use)."""
    return controller.build(CLUSTER / "build-argocd.sh")


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _settings() -> list[dict[str, Any]]:
    """What Argo CD's install manifest puts in its namespace and the controller reads."""
    part_of = {"app.kubernetes.io/part-of": "argocd"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": part_of}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "argocd-secret", "namespace": NAMESPACE, "labels": part_of}},
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
         "metadata": {"name": "default", "namespace": NAMESPACE},
         "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}],
                  "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}},
    ]


@dataclass
class ArgoCD:
    kube: Any
    redis: ServerProcess
    repo_server: ServerProcess
    controller: ServerProcess
    made: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) in NAMESPACE

    @classmethod
    def start(cls, kube: Any, work: Path, *, reconcile: int | None = 10) -> ArgoCD:
        """Argo CD comparing each Application every ``reconcile`` seconds (no jitter), or as
        its defaults say (None: 180 s plus up to 60 s of jitter)."""
        argocd = build_argocd()
        # These two print the binary, not its folder.
        helm = controller.build(CLUSTER / "build-helm.sh").parent
        kustomize = controller.build(CLUSTER / "build-kustomize.sh").parent
        crds = argocd / "crds"
        controller.install_crds(kube, [crds / "appproject-crd.yaml"], "appprojects.argoproj.io",
                                "Argo CD AppProject")
        controller.install_crds(kube, [crds / "application-crd.yaml",
                                       crds / "applicationset-crd.yaml"],
                                "applications.argoproj.io", "Argo CD Application")
        kube.kubectl("apply", "--server-side", "-f", "-",
                     input="\n---\n".join(json.dumps(d) for d in _settings()))
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / "tmp"  # the repo-server's clones and helm's homes
        tmp.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "PATH": f"{argocd}:{helm}:{kustomize}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "TMPDIR": str(tmp),
            "HOME": str(work),
            # Each session's repo-server has its own askpass socket (default: one in /tmp).
            "ARGOCD_ASK_PASS_SOCK": str(work / "askpass.sock"),
            "ARGOCD_GPG_ENABLED": "false",
            # One controller: shard 0 of 1.
            "HOSTNAME": "argocd-application-controller-0",
        }
        if reconcile is not None:
            # What argocd-cm's timeout.reconciliation sets in a real install (the controller's
            # resync and the repo-server's cache of a branch head), and its jitter.
            env["ARGOCD_RECONCILIATION_TIMEOUT"] = f"{reconcile}s"
            env["ARGOCD_RECONCILIATION_JITTER"] = "0s"

        redis = ServerProcess.start(
            "redis", lambda port: ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(work)],
            redis_ready, work / "redis.log", timeout=30)
        started: list[ServerProcess] = [redis]
        try:
            redis_addr = f"127.0.0.1:{redis.port}"
            grpc = free_port()

            def repo_argv(port: int) -> list[str]:
                return [str(argocd / "argocd-repo-server"), "--address", "127.0.0.1",
                        "--port", str(grpc), "--metrics-address", "127.0.0.1",
                        "--metrics-port", str(port), "--redis", redis_addr,
                        # Plain gRPC on loopback; v3.6.2 refuses --disable-tls with its
                        # default client CA path, so that is emptied too.
                        "--disable-tls", "--client-ca-path=",
                        "--loglevel", "info", "--logformat", "text"]

            def controller_argv(port: int) -> list[str]:
                return [str(argocd / "argocd-application-controller"), "--namespace", NAMESPACE,
                        "--metrics-port", str(port), "--repo-server", f"127.0.0.1:{grpc}",
                        "--repo-server-plaintext", "--redis", redis_addr,
                        "--loglevel", "info", "--logformat", "text"]

            def healthy(port: int) -> bool:
                return http_ok(f"http://127.0.0.1:{port}/healthz",
                               ok=lambda r: r.status_code == 200)

            repo_server = ServerProcess.start("argocd-repo-server", repo_argv, healthy,
                                              work / "repo-server.log", timeout=90, env=env)
            started.append(repo_server)
            app_controller = ServerProcess.start("argocd-application-controller", controller_argv,
                                             healthy, work / "application-controller.log",
                                             timeout=90, env=env)
        except Exception:
            for proc in reversed(started):
                proc.stop()
            raise
        return cls(kube, redis, repo_server, app_controller)

    def cleanup(self) -> None:
        """Delete the Applications and repository Secrets made so far (not what they synced:
        no finalizer), so a shared Argo CD stops comparing them."""
        for kind, name in self.made:
            self.kube.kubectl("delete", kind, name, "-n", NAMESPACE, "--wait=false")
        self.made.clear()

    def stop(self) -> None:
        self.controller.stop()
        self.repo_server.stop()
        self.redis.stop()

    # --- what a user applies ------------------------------------------------------------------

    def add_repository(self, name: str, *, url: str, user: str, password: str) -> None:
        """A repository Secret: Argo CD's credentials for ``url``."""
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": name, "namespace": NAMESPACE,
                               "labels": {"argocd.argoproj.io/secret-type": "repository"}},
                  "stringData": {"type": "git", "url": url, "username": user,
                                 "password": password}}
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(secret))
        self.made.append(("secret", name))

    def deliver(self, name: str, namespace: str, *, url: str, path: str) -> None:
        """An Application syncing ``path`` of ``url`` (branch main) into ``namespace``,
        automatically."""
        app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": name, "namespace": NAMESPACE},
               "spec": {"project": "default",
                        "source": {"repoURL": url, "targetRevision": "main", "path": path},
                        "destination": {"server": IN_CLUSTER, "namespace": namespace},
                        "syncPolicy": {"automated": {"prune": True}}}}
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(app))
        self.made.append(("applications.argoproj.io", name))

    def application(self, name: str) -> dict[str, Any]:
        raw = self.kube.kubectl("get", "applications.argoproj.io", name, "-n", NAMESPACE,
                                "-o", "json", check=False)
        return json.loads(raw) if raw else {}

    def synced_revision(self, name: str) -> str:
        """The commit the Application's last sync applied successfully, or ""."""
        operation = (self.application(name).get("status") or {}).get("operationState") or {}
        if operation.get("phase") != "Succeeded":
            return ""
        return (operation.get("syncResult") or {}).get("revision", "")

    def wait_synced(self, name: str, commit: str, timeout: float = 120) -> str:
        """Wait until the Application synced ``commit``; that commit."""
        try:
            return wait_for(lambda: self.synced_revision(name) == commit and commit,
                            timeout=timeout, what=f"Application {name} to sync {commit}")
        except TimeoutError as exc:
            status = json.dumps(self.application(name).get("status"), indent=1)
            raise TimeoutError(f"{exc}\n{status[-3000:]}\nrepo-server:\n"
                               f"{self.repo_server.tail(20)}\napplication-controller:\n"
                               f"{self.controller.tail(20)}") from None

    def deliver_repo(self, git_server: GitServer, namespace: str, files: dict[str, str], *,
                     path: str = "deploy", repo: str = "", app: str = "") -> tuple[str, str]:
        """A new repository (``repo``, or a unique name) holding ``files``, synced into
        ``namespace`` by Application ``app`` (``path``); (its name, the commit synced)."""
        repo = repo or unique("app")
        app = app or repo
        git_server.create_repo(repo)
        commit = git_server.commit(repo, files, "the app")
        started = time.monotonic()
        url = git_server.repo_url(repo)
        self.add_repository(f"repo-{repo}", url=url, user=git_server.user,
                            password=git_server.password)
        self.deliver(app, namespace, url=url, path=path)
        self.wait_synced(app, commit)
        print(f"\n[argocd] {commit[:12]} fetched and synced in {time.monotonic() - started:.1f}s")
        return repo, commit
