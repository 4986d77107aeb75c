"""The real cosign (v2.6.5, built by tests/cluster/build-cosign.sh), as a user's CI runs it.

Tests make key pairs and signatures with it, exactly as a pipeline would
(``cosign generate-key-pair``, ``cosign sign --key``), and check the
operator's own signatures with ``cosign verify --key``. Nothing leaves the
machine: no transparency log upload (``--tlog-upload=false``,
``--insecure-ignore-tlog``), and ``verify`` is given an empty trusted root
(``--trusted-root``) so it never asks Sigstore's TUF repository for one. The
local registry speaks plain HTTP (``--allow-http-registry``).

``referrers=True`` signs with ``--registry-referrers-mode=oci-1-1`` (an
experimental mode: ``COSIGN_EXPERIMENTAL=1``): the signature is an OCI 1.1
artifact whose subject is the image. Debian's registry (distribution 2.8)
has no referrers API, so cosign's library keeps the referrers tag schema's
index (``sha256-<hex>``), which the operator reads in that case.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "imagepatch-test"
EMPTY_TRUSTED_ROOT = '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}\n'


def build_cosign() -> str:
    """The path of the cosign binary, built on first use (cached; minutes when cold)."""
    build = subprocess.run(
        ["bash", str(REPO / "tests" / "cluster" / "build-cosign.sh")],
        capture_output=True, text=True, timeout=1800,
    )
    if build.returncode != 0:
        raise RuntimeError(f"tests/cluster/build-cosign.sh failed:\n{build.stderr[-3000:]}")
    return build.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class KeyPair:
    private: Path  # cosign's encrypted format, password PASSWORD
    public: Path  # PEM


@dataclass
class Cosign:
    binary: str
    workdir: Path

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.trusted_root = self.workdir / "trusted_root.json"
        self.trusted_root.write_text(EMPTY_TRUSTED_ROOT)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "COSIGN_PASSWORD": PASSWORD, "COSIGN_YES": "true",
                "COSIGN_EXPERIMENTAL": "1", "HOME": str(self.workdir)}

    def run(self, *args: str, check: bool = True, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.binary, *args], env=self._env(), cwd=cwd or self.workdir,
                              capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise RuntimeError(f"cosign {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stderr[-3000:]}")
        return done

    def generate_key_pair(self, name: str) -> KeyPair:
        where = self.workdir / name
        where.mkdir(parents=True, exist_ok=True)
        self.run("generate-key-pair", cwd=where)
        return KeyPair(where / "cosign.key", where / "cosign.pub")

    def sign(self, image: str, key: KeyPair | Path, *, referrers: bool = False) -> None:
        """``cosign sign --key`` of ``image`` (pinned by digest), as CI would after its push."""
        private = key.private if isinstance(key, KeyPair) else key
        mode = ["--registry-referrers-mode=oci-1-1"] if referrers else []
        self.run("sign", "--key", str(private), "--tlog-upload=false", "--allow-http-registry",
                 "--allow-insecure-registry", *mode, image)

    def attest_provenance(self, image: str, key: KeyPair, builder_id: str) -> None:
        """``cosign attest --type slsaprovenance`` with a minimal SLSA v0.2 predicate."""
        predicate = self.workdir / f"provenance-{abs(hash((image, builder_id)))}.json"
        predicate.write_text(json.dumps({"builder": {"id": builder_id},
                                         "buildType": "https://imagepatch.dev/test-build"}))
        self.run("attest", "--key", str(key.private), "--type", "slsaprovenance", "--predicate",
                 str(predicate), "--tlog-upload=false", "--allow-http-registry",
                 "--allow-insecure-registry", image)

    def verify(self, image: str, public: Path, *, referrers: bool = False
               ) -> subprocess.CompletedProcess[str]:
        """``cosign verify --key`` (not checked: the caller asserts on the outcome)."""
        mode = ["--experimental-oci11"] if referrers else []
        return self.run("verify", "--key", str(public), "--insecure-ignore-tlog",
                        "--trusted-root", str(self.trusted_root), "--allow-http-registry",
                        "--allow-insecure-registry", *mode, image, check=False)
