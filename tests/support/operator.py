"""Run the operator as it runs in a cluster: its own ServiceAccount, shipped RBAC.

As admin, this applies ``deploy/namespace.yaml``, ``deploy/rbac.yaml`` and
``deploy/admission-policy.yaml`` (exactly what users install: the operator's
writes pass the ValidatingAdmissionPolicy too), mints a token for the operator's
ServiceAccount with the TokenRequest API, writes a kubeconfig holding only
that token and the cluster's CA, and starts ``python -m imagepatch run`` as a
subprocess with it. A missing permission therefore fails the test: the log is
checked for 403/Forbidden when the operator stops.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.harness import kubeconfig_yaml
from tests.support.controller import stop_session
from tests.support.ports import free_port
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "imagepatch-system"
SERVICE_ACCOUNT = "imagepatch"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
# deploy/admission-policy.yaml's ValidatingAdmissionPolicy (and its binding).
ADMISSION_POLICY = "imagepatch-writes"
# An RBAC denial shows as an HTTP 403 status or a "forbidden" API message; the
# pattern must not match timestamps such as "07:39:48,403".
EVENT_POST = re.compile(r'"POST /api/v1/namespaces/[^/ ]+/events HTTP')
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
FORBIDDEN = re.compile(r'HTTP/1\.1" 403\b|\b403\b.*[Ff]orbidden|[Ff]orbidden.*\b403\b|\bforbidden:')


def install_rbac(kube) -> None:
    """Apply the shipped namespace, RBAC and admission policy, as an admin would.

    The operator then runs under ``deploy/admission-policy.yaml``: a write the
    policy refuses is a 403 in its log, which fails the test.
    """
    for name in ("namespace.yaml", "rbac.yaml", "admission-policy.yaml"):
        kube.kubectl("apply", "-f", str(REPO / "deploy" / name))
    wait_for_admission_policy(kube)


def wait_for_admission_policy(kube, *, timeout: float = 30.0) -> None:
    """Wait until the API server enforces the admission policy (it loads policies asynchronously).

    The probe is a server-side dry run (nothing is created) of a write the
    policy refuses, made as the operator's ServiceAccount by impersonation (the
    audit log records only requests authenticated as the ServiceAccount, so
    tests/e2e/test_rbac_use.py never sees it): a Job in the operator's own
    namespace, owned by no CronJob.
    """
    probe = json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "admission-policy-probe", "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "probe", "image": "registry.invalid/probe@sha256:" + "0" * 64}]}}},
    })

    def refused() -> bool:
        try:
            kube.kubectl("create", "--dry-run=server", f"--as={SERVICE_ACCOUNT_USER}", "-f", "-",
                         input=probe)
        except RuntimeError as exc:
            return ADMISSION_POLICY in str(exc)
        return False
    wait_for(refused, timeout=timeout, interval=0.2,
             what=f"the API server to enforce ValidatingAdmissionPolicy {ADMISSION_POLICY}")


def service_account_kubeconfig(kube, path: Path, *, duration: str = "2h") -> Path:
    """A kubeconfig with only the operator ServiceAccount's token (TokenRequest API)."""
    token = kube.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, f"--duration={duration}"
    ).strip()
    raw = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = raw["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    path.write_text(kubeconfig_yaml(server=cluster["server"], ca_pem=ca_pem, user={"token": token}))
    return path


@dataclass
class OperatorProcess:
    """``python -m imagepatch run`` under the operator's ServiceAccount."""

    kubeconfig: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Debug logging costs CPU at a thousand workloads: benchmarks turn it off.
    verbose: bool = True
    # Serve /metrics (--metrics-port): tests wait on its pass counters, not on sleeps.
    metrics: bool = False
    # The test registries run on loopback, which the operator refuses to reach
    # unless allowed (--registry-allow-network); tests of that refusal turn it off.
    allow_loopback: bool = True
    health_port: int = 0
    metrics_port: int = 0
    proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60.0) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port() if self.metrics else 0
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "imagepatch", "run", *(["--verbose"] if self.verbose else []),
                "--liveness-endpoint", f"http://127.0.0.1:{self.health_port}/healthz",
                *(["--metrics-port", str(self.metrics_port)] if self.metrics else []),
                *([arg for net in LOOPBACK_NETWORKS for arg in ("--registry-allow-network", net)]
                  if self.allow_loopback else []),
                *self.extra_args,
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthz() == 200:
                return
            time.sleep(0.3)
        raise TimeoutError(f"operator liveness endpoint never answered:\n{self.log_tail()}")

    def healthz(self) -> int | None:
        """The liveness probe's HTTP status (500: reported dead), or None if nothing answers."""
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    @property
    def metrics_url(self) -> str:
        if not self.metrics_port:
            raise RuntimeError("this operator was started without metrics=True")
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def wait_passes(self, passes: int = 2, *, counter: str = "imagepatch_detection_passes_total",
                    after: float | None = None, timeout: float = 60.0) -> float:
        """Wait until ``counter`` has advanced by ``passes`` from ``after`` (default: now).

        Call it after the action, before asserting that nothing happened: with
        the default of two, at least one whole pass began after the action (the
        one in flight when it was taken may have read the cluster before it).
        """
        start = self.metric(counter) if after is None else after

        def advanced() -> float | None:
            try:
                value = self.metric(counter)
            except OSError:  # a new leader serves /metrics once its startup handler ran
                return None
            return value if value >= start + passes else None
        return wait_for(advanced, timeout=timeout, interval=0.2,
                        what=f"{passes} more of {counter} (from {start:.0f})")

    def stop(self) -> None:
        stop_session(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill would: no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def image_patches(self, namespace: str, name: str) -> list[str]:
        """The image patches the operator made to one Deployment (its INFO log lines).

        Counting these, not the Deployment's ``generation``, is exact: writing
        the ``imagepatch.dev/state`` annotation also bumps a Deployment's
        generation (the apps API counts annotation changes).
        """
        marker = f": setting {namespace}/{name}/"
        return [ln for ln in self.log().splitlines() if marker in ln]

    def forbidden_lines(self) -> list[str]:
        # A namespace being deleted refuses new Events with a 403 too; that is
        # not a missing permission. (An RBAC denial of an Event still shows in the
        # WARNING line that follows, which names the missing permission.)
        return [ln for ln in self.log().splitlines()
                if FORBIDDEN.search(ln) and "is being terminated" not in ln
                and not EVENT_POST.search(ln)]


@contextlib.contextmanager
def operator_running(kube, work: Path, *, extra_args: Sequence[str] = ("--detect-tick", "1"),
                     rbac: Sequence[Path] = (), metrics: bool = False) -> Iterator[OperatorProcess]:
    """The operator under its shipped RBAC (plus the ``rbac`` files), run for a test module.

    Its log is ``work/operator.log``. After the module, it is stopped and any
    RBAC or admission denial in its log fails the module. ``metrics``: serve
    /metrics, for tests that wait on its pass counters (``wait_passes``).
    """
    install_rbac(kube)
    for path in rbac:
        kube.kubectl("apply", "-f", str(path))
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log", extra_args=list(extra_args), metrics=metrics,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC or admission denials:\n" + "\n".join(forbidden[:10])
