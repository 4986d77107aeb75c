"""The operator image is built and run, not only described.

Given the session registry and buildah, when ``make image``'s script builds the
Dockerfile on a Debian 12 base made from Debian packages (Docker Hub is out of
reach here: ``release/debian-base.sh``, mmdebstrap, pushed to the session
registry) and pushes the image, then:

* the image's labels name that base by the digest the registry holds, and the
  version and revision it was built from (so imagepatch can patch itself);
* it carries a CycloneDX SBOM listing the locked runtime dependencies at their
  locked versions;
* run as uid 65532 on a read-only root filesystem, ``imagepatch --help`` and
  ``imagepatch version`` work, and a write to the root filesystem fails;
* ``git --version`` and ``ssh -V`` run in it (Git write-back needs both).

Read-only root: ``buildah run`` has no ``--read-only`` flag (buildah 1.28), so
the test makes the container's root filesystem read-only itself, as a runtime
would: ``buildah mount`` gives its directory, which is bind-mounted onto
itself; two host directories are bind-mounted on its ``/tmp`` (the chart's
emptyDir) and ``/run``; then the root mount is remounted ``ro`` (the two nested
mounts stay writable), and ``buildah run`` (chroot isolation) chroots into it.
``/run`` is writable because buildah itself bind-mounts its ``/run/.containerenv``
there and removes that mountpoint afterwards (on a read-only ``/run`` the
removal fails and buildah 1.28 crashes); the operator never writes there, and
``buildah run -v``/``--mount`` for ``/tmp`` hit the same clean-up. Needs root,
as the rest of the buildah tests do.

Cold, the Debian base is built by mmdebstrap (about 2 minutes) and cached under
``$IMAGEPATCH_CACHE/base``; a warm run imports and pushes it, then builds the
image (pip downloads the locked wheels each time). The time is printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagepatch import __version__
from tests.support.images import Buildah
from tests.support.registry import LocalRegistry

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMAGEPATCH_CACHE", "/var/cache/imagepatch"))
BASE_REPO, BASE_TAG = "imagepatch/debian-python", "3.11-bookworm"


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (the SBOM says typing_extensions, the lock typing-extensions)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    return {normalized(m[0]): m[1] for m in re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", lock.read_text(), re.M)}


@pytest.fixture(scope="module")
def image(registry: LocalRegistry, buildah: Buildah) -> Iterator[dict[str, str]]:
    """Build and push the operator image once: its reference, digest and the buildah env."""
    tag = f"test-{uuid.uuid4().hex[:8]}"
    ref = f"{registry.host}/imagepatch/imagepatch:{tag}"
    env = {
        **buildah.env, "IMAGEPATCH_CACHE": str(CACHE),
        "BASE": "debian", "BASE_REGISTRY": registry.host, "TLS_VERIFY": "false", "COMPRESS": "false",
        "IMAGE": ref, "PUSH": "1",
    }
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    started = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "release" / "build-image.sh")], env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    print(f"\nmake image (BASE=debian), base and image, build and push: "
          f"{time.monotonic() - started:.0f}s\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    digest = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), proc.stdout
    assert registry.head_digest("imagepatch/imagepatch", tag) == digest
    yield {"ref": ref, "digest": digest, "revision": head.stdout.strip() if head.returncode == 0 else "unknown"}


def buildah_cmd(buildah: Buildah, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["buildah", *args], env=buildah.env, capture_output=True, text=True,
                          timeout=300, check=False)
    if check:
        assert proc.returncode == 0, f"buildah {' '.join(args)}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def test_image_labels_name_its_base_by_digest_and_its_version(
    image: dict[str, str], registry: LocalRegistry, buildah: Buildah
) -> None:
    config = json.loads(buildah_cmd(buildah, "inspect", "--type", "image", image["ref"]).stdout)
    labels = config["OCIv1"]["config"]["Labels"]
    assert labels["org.opencontainers.image.base.name"] == f"{registry.host}/{BASE_REPO}:{BASE_TAG}"
    assert labels["org.opencontainers.image.base.digest"] == registry.head_digest(BASE_REPO, BASE_TAG)
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"] == image["revision"]
    assert config["OCIv1"]["config"]["User"] == "65532:65532"


@pytest.fixture(scope="module")
def readonly_container(image: dict[str, str], buildah: Buildah, tmp_path_factory) -> Iterator[str]:
    """A working container of the image whose root filesystem is a read-only mount."""
    ctr = buildah_cmd(buildah, "from", "--pull=false", image["ref"]).stdout.strip().splitlines()[-1]
    root = Path(buildah_cmd(buildah, "mount", ctr).stdout.strip())
    mounted: list[Path] = []

    def bind(source: Path, target: Path) -> None:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        mounted.append(target)

    try:
        bind(root, root)
        for writable in ("tmp", "run"):
            host = tmp_path_factory.mktemp(f"image-{writable}")
            host.chmod(0o1777)
            bind(host, root / writable)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], check=True)
        yield ctr
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)
        buildah_cmd(buildah, "rm", ctr, check=False)


def run_as_65532(buildah: Buildah, ctr: str, *command: str) -> subprocess.CompletedProcess[str]:
    return buildah_cmd(buildah, "run", "--user", "65532:65532", ctr, "--", *command, check=False)


def test_image_runs_as_65532_on_a_read_only_root(
    readonly_container: str, buildah: Buildah
) -> None:
    ctr = readonly_container
    helped = run_as_65532(buildah, ctr, "imagepatch", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: imagepatch" in helped.stdout
    verbs = re.search(r"\{([a-z,]+)\}", helped.stdout)
    assert verbs and {"run", "report", "version", "approve", "why"} <= set(verbs.group(1).split(","))
    version = run_as_65532(buildah, ctr, "imagepatch", "version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"imagepatch {__version__}"

    probe = run_as_65532(buildah, ctr, "sh", "-c",
                         'id -u; grep " / " /proc/mounts; touch /opt/venv/x 2>&1; touch /tmp/x && echo tmp-ok')
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == "65532", probe.stdout
    assert re.match(r"\S+ / \S+ ro[ ,]", lines[1]), f"the root is not mounted read-only: {lines[1]}"
    assert "Read-only file system" in lines[2], probe.stdout
    assert lines[3] == "tmp-ok", probe.stdout


def test_image_has_git_and_ssh_for_git_write_back(readonly_container: str, buildah: Buildah) -> None:
    # rollout.mode GitWriteBack runs the git binary, over HTTPS or SSH (adapters/git.py).
    git = run_as_65532(buildah, readonly_container, "git", "--version")
    assert git.returncode == 0, git.stderr
    assert re.match(r"git version \d+\.\d+", git.stdout), git.stdout
    ssh = run_as_65532(buildah, readonly_container, "ssh", "-V")
    assert ssh.returncode == 0, ssh.stderr
    assert "OpenSSH" in ssh.stderr, ssh.stderr  # ssh -V prints to stderr


def test_image_carries_an_sbom_of_the_locked_dependencies(
    readonly_container: str, buildah: Buildah
) -> None:
    ctr = readonly_container
    cat = run_as_65532(buildah, ctr, "cat", "/usr/share/doc/imagepatch/sbom.cdx.json")
    assert cat.returncode == 0, cat.stderr
    sbom = json.loads(cat.stdout)
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "imagepatch"
    listed = {normalized(c["name"]): c["version"] for c in sbom["components"]}
    locked = locked_versions(REPO / "requirements" / "runtime.lock")
    for name in ("kopf", "kubernetes", "boto3", "httpx", "stamina"):
        assert listed[name] == locked[name], (name, listed.get(name), locked[name])
    # Nothing but the locked runtime dependencies (and imagepatch itself) is in the venv.
    assert set(listed) - {"imagepatch"} <= set(locked), set(listed) - set(locked)
