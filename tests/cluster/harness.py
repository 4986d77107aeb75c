"""Start and stop the local test control plane on 127.0.0.1.

The binaries come from ``tests/cluster/build.sh`` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kubectl and kwok, all built from Go
modules). This module wires them together the way kwokctl's "binary" runtime
does, but with RBAC and the default admission plugins kept on:

* one CA signs the API server's serving certificate and an admin client
  certificate (``O=system:masters``);
* a ServiceAccount signing key, so TokenRequest works and the operator under
  test can run with a real ServiceAccount token;
* an audit log (``audit.log`` in the state dir, policy ``audit-policy.yaml``)
  of the operator ServiceAccount's requests only, at Metadata level, so a test
  can compare what the operator calls with the RBAC it ships;
* kwok manages every Node and drives pod status through stages: kwok's own
  default set plus ours under ``tests/cluster/stages/`` (``never-ready``,
  ``crashloop``, ``job-fail``), selected by the pod label
  ``sim.imagepatch.dev/behavior``.

It is used by the pytest session fixture (``tests/conftest.py``) and by people,
through ``make cluster-up`` / ``make cluster-down``::

    python -m tests.cluster.harness up --state-dir .local/cluster
    python -m tests.cluster.harness down --state-dir .local/cluster
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEHAVIOR_LABEL = "sim.imagepatch.dev/behavior"
NODE_NAMES = ("kwok-node-0", "kwok-node-1")


def build_binaries() -> Path:
    """Build the control plane if needed (cached on its inputs); return the bin dir."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_certs(pki: Path) -> None:
    """A CA, the API server's serving cert, an admin client cert and the SA key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def save_key(key, name: str) -> None:
        (pki / name).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("imagepatch-test-ca"))
        .issuer_name(name("imagepatch-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    save_key(ca_key, "ca.key")
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(cn: str, org: str | None, *, server: bool, stem: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        save_key(key, f"{stem}.key")
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    issue("kube-apiserver", None, server=True, stem="apiserver")
    issue("kubernetes-admin", "system:masters", server=False, stem="admin")
    # ServiceAccount tokens are signed with RS256 by default, so an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save_key(sa_key, "sa.key")
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig_yaml(*, server: str, ca_pem: bytes, user: dict, name: str = "imagepatch-local") -> str:
    """A one-context kubeconfig; ``user`` is the kubeconfig ``user`` mapping."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    # JSON is valid YAML, and it keeps this module free of a YAML dependency.
    return json.dumps(doc, indent=2)


@dataclass
class LocalCluster:
    """One etcd + control plane + kwok, all on loopback, state under ``state_dir``."""

    state_dir: Path
    bin_dir: Path
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def audit_log(self) -> Path:
        """The operator ServiceAccount's requests, one JSON audit event per line."""
        return self.state_dir / "logs" / "audit.log"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    # -- lifecycle ---------------------------------------------------------------

    def start(self, *, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = (
            free_port(), free_port(), free_port()
        )
        _write_certs(self.pki)
        admin = {
            "client-certificate-data": base64.b64encode((self.pki / "admin.crt").read_bytes()).decode(),
            "client-key-data": base64.b64encode((self.pki / "admin.key").read_bytes()).decode(),
        }
        self.kubeconfig.write_text(
            kubeconfig_yaml(server=self.server, ca_pem=(self.pki / "ca.crt").read_bytes(), user=admin)
        )
        self._save()
        try:
            self._spawn("etcd", self._etcd_args())
            self._wait_http(f"http://127.0.0.1:{self.etcd_port}/health", "etcd", timeout)
            self._spawn("kube-apiserver", self._apiserver_args())
            self._wait_http(f"{self.server}/readyz", "kube-apiserver", timeout)
            self._spawn("kube-controller-manager", self._controller_manager_args())
            self._spawn("kube-scheduler", self._scheduler_args())
            self._write_kwok_config()
            self._spawn("kwok", self._kwok_args())
            self._create_nodes()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._log(f"cluster ready in {time.monotonic() - started:.1f}s at {self.server}")

    def stop(self) -> None:
        for proc in reversed(list(self.pids)):
            pid = self.pids[proc]
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 15
        for pid in self.pids.values():
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids.clear()
        self._save()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (SIGTERM, then SIGKILL); etcd and the rest keep running."""
        pid = self.pids.pop("kube-apiserver")
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self._save()

    def start_apiserver(self, *, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port, with the same state in etcd."""
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait_http(f"{self.server}/readyz", "kube-apiserver", timeout)

    # -- helpers -----------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        res = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def log_tail(self, proc: str, lines: int = 30) -> str:
        path = self.state_dir / "logs" / f"{proc}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _log(self, msg: str) -> None:
        print(f"[cluster] {msg}", file=sys.stderr, flush=True)

    def _save(self) -> None:
        (self.state_dir / "state.json").write_text(
            json.dumps(
                {
                    "bin_dir": str(self.bin_dir),
                    "etcd_port": self.etcd_port,
                    "etcd_peer_port": self.etcd_peer_port,
                    "apiserver_port": self.apiserver_port,
                    "pids": self.pids,
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster:
        data = json.loads((state_dir / "state.json").read_text())
        return cls(
            state_dir=state_dir,
            bin_dir=Path(data["bin_dir"]),
            etcd_port=data["etcd_port"],
            etcd_peer_port=data["etcd_peer_port"],
            apiserver_port=data["apiserver_port"],
            pids=data["pids"],
        )

    def _spawn(self, proc: str, args: list[str]) -> None:
        log = open(self.state_dir / "logs" / f"{proc}.log", "ab")  # noqa: SIM115 - owned by child
        # A new session, so `down` can stop the whole process group and the
        # cluster outlives the `make cluster-up` shell that started it.
        child = subprocess.Popen(
            [str(self.bin_dir / proc), *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.state_dir,
        )
        log.close()
        self.pids[proc] = child.pid
        self._save()

    def _check_alive(self) -> None:
        for proc, pid in self.pids.items():
            if not _alive(pid):
                raise RuntimeError(f"{proc} exited during start-up:\n{self.log_tail(proc)}")

    def _wait_http(self, url: str, what: str, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise TimeoutError(f"{what} not healthy after {timeout}s ({last}):\n{self.log_tail(what)}")

    def _wait_ready(self, timeout: float) -> None:
        """Nodes Ready (kwok) and the default ServiceAccount exists (controller-manager)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            nodes = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
            ready = [
                n for n in nodes
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions", []))
            ]
            sa = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            if len(ready) == len(NODE_NAMES) and sa:
                return
            time.sleep(0.5)
        raise TimeoutError(
            "cluster not ready: nodes or default ServiceAccount missing\n"
            + self.log_tail("kwok") + "\n" + self.log_tail("kube-controller-manager")
        )

    # -- component arguments -----------------------------------------------------

    def _etcd_args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            "--name=imagepatch",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=imagepatch={peer}",
            "--unsafe-no-fsync",  # test data only: speed over durability
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        p = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            # The default plugin set (ServiceAccount, NamespaceLifecycle,
            # PodSecurity, ...) stays on; this one is added so that the operator's
            # ownerReferences are checked against its RBAC, as on hardened clusters.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true",
            f"--audit-policy-file={HERE / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            # Written before the response is sent: a test reads it right after.
            "--audit-log-mode=blocking",
            "--audit-log-format=json",
            "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            # As kwokctl does: no client-side rate limit, so controllers keep up
            # with many simulated pods on a busy 2-core machine.
            "--kube-api-qps=5000",
            "--kube-api-burst=10000",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--kube-api-qps=5000",
            "--kube-api-burst=10000",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def _write_kwok_config(self) -> None:
        """kwok adds no default stages once any are given, so pass the full set."""
        docs = []
        for path in sorted((self.bin_dir / "kwok-stages").glob("*.yaml")):
            docs.append(path.read_text())
        for path in sorted((HERE / "stages").glob("*.yaml")):
            docs.append(path.read_text())
        (self.state_dir / "kwok.yaml").write_text("\n---\n".join(d.strip() for d in docs) + "\n")

    def _kwok_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.state_dir / 'kwok.yaml'}",
            "--manage-all-nodes=true",
            # Node liveness through Leases, as kwokctl does: the default stage set
            # updates node status only every ~10 minutes and relies on the lease,
            # so without one the node-lifecycle controller flips every node to
            # NotReady after its 50 s grace period and marks all pods not ready.
            "--node-lease-duration-seconds=40",
            "--cidr=10.0.0.1/16",
            "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ]

    def _create_nodes(self) -> None:
        items = []
        for node in NODE_NAMES:
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "kubernetes.io/hostname": node,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    },
                }
            )
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.harness", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "build"])
    parser.add_argument("--state-dir", type=Path, default=Path(".local/cluster"))
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "build":
        print(build_binaries())
        return 0
    if args.command == "down":
        if (state_dir / "state.json").exists():
            LocalCluster.load(state_dir).stop()
            print(f"[cluster] stopped ({state_dir})", file=sys.stderr)
        return 0
    if (state_dir / "state.json").exists():
        old = LocalCluster.load(state_dir)
        if old.pids and all(_alive(p) for p in old.pids.values()):
            print(f"export KUBECONFIG={old.kubeconfig}")
            return 0
        old.stop()
    bin_dir = build_binaries()
    cluster = LocalCluster(state_dir=state_dir, bin_dir=bin_dir)
    # Fresh etcd data each time: a test cluster carries no state over.
    subprocess.run(["rm", "-rf", str(state_dir / "etcd")], check=True)
    cluster.start()
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export PATH={bin_dir}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
