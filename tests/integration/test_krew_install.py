"""The release's krew archive installs with krew itself, and the plugin it installs runs.

``make krew-archive`` (release/krew.py) builds ``kubectl-imagepatch_v<version>.tar.gz``
and the filled manifest. Here:

* two builds give the same bytes (so the manifest's sha256 can be checked by
  anyone who builds the tag), the archive holds what the manifest's ``files``
  and ``bin`` name (the executable, mode 0755, and LICENSE) with fixed owners
  and times, and the zip application holds imagepatch, its ``__main__`` and
  the cut-down lock;
* the real krew (tests/cluster/build-krew.sh, built from its Go module if the
  cache lacks it) installs it offline (``krew install --manifest --archive``,
  with KREW_ROOT in tmp), from a local git index as a user's own index is;
  the installed ``kubectl-imagepatch`` runs with a python3 that has none of
  imagepatch's dependencies (the base interpreter of the test's virtualenv):
  its first run installs the locked wheels into a private virtualenv (from
  PyPI, as a user's would), then ``version``, ``--help``, and ``list``,
  ``why`` and ``report`` through the real kubectl's plugin discovery against
  the real API server, as a ServiceAccount; ``krew uninstall`` removes it.

Figures (printed, never asserted): archive size, install time, first and
second run times.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from imagepatch import __version__
from tests.integration.test_kubectl_plugin import scene  # noqa: F401 - a fixture: RBAC, patches

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
TAG = f"v{__version__}"
ARCHIVE = f"kubectl-imagepatch_{TAG}.tar.gz"


def release(out: Path, *args: str) -> tuple[Path, Path]:
    """`make krew-archive`'s command: the archive and the manifest it wrote."""
    res = subprocess.run([sys.executable, "release/krew.py", "--out", str(out), *args],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=120)
    archive, manifest = (Path(line) for line in res.stdout.split())
    return archive, manifest


@pytest.fixture(scope="module")
def krew() -> Path:
    """The krew binary, built now if .ci/setup has not built it (minutes, once)."""
    res = subprocess.run(["bash", "tests/cluster/build-krew.sh"], cwd=REPO, capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip())


def test_the_archive_is_reproducible_and_holds_what_the_manifest_installs(tmp_path) -> None:
    first, manifest = release(tmp_path / "one")
    second, _ = release(tmp_path / "two")
    assert first.name == ARCHIVE
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert hashlib.sha256(second.read_bytes()).hexdigest() == digest
    print(f"\nkrew archive: {first.stat().st_size} bytes, sha256 {digest}")

    spec = yaml.safe_load(manifest.read_text())["spec"]
    assert spec["version"] == TAG
    (platform,) = spec["platforms"]
    assert platform["sha256"] == digest
    assert platform["uri"] == f"https://github.com/imagepatch/imagepatch/releases/download/{TAG}/{ARCHIVE}"
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(e["from"] for e in platform["files"])
        assert all(m.isfile() and m.mtime == 0 and m.uid == m.gid == 0 and not m.uname
                   for m in members)
        modes = {m.name: m.mode for m in members}
        assert modes == {"LICENSE": 0o644, platform["bin"]: 0o755}
        assert tar.extractfile("LICENSE").read() == (REPO / "LICENSE").read_bytes()
        exe = tar.extractfile(platform["bin"]).read()
    assert first.read_bytes()[4:8] == b"\0\0\0\0", "gzip's header holds no time"
    assert exe.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(io.BytesIO(exe)) as app:
        names = app.namelist()
        assert names == sorted(names)
        assert {"__main__.py", "requirements.lock", "imagepatch/__init__.py",
                "imagepatch/cli.py", "imagepatch/cli_plugin.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert {info.date_time for info in app.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_release_url_names_the_archive_under_it(tmp_path) -> None:
    _, manifest = release(tmp_path, "--base-url", "https://downloads.example.com/imagepatch/{tag}/")
    (platform,) = yaml.safe_load(manifest.read_text())["spec"]["platforms"]
    assert platform["uri"] == f"https://downloads.example.com/imagepatch/{TAG}/{ARCHIVE}"


def run(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, argv))} exited {res.returncode}:\n{res.stderr}"
    return res


def test_krew_installs_the_archive_and_the_plugin_runs(krew, scene, tmp_path) -> None:  # noqa: F811
    archive, manifest = release(tmp_path / "dist")
    # A python3 without imagepatch's dependencies: the virtualenv's base interpreter.
    pybin = tmp_path / "pybin"
    pybin.mkdir()
    (pybin / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    krew_root = tmp_path / "krew"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(KREW_ROOT=str(krew_root), KREW_NO_UPGRADE_CHECK="1",
               IMAGEPATCH_PLUGIN_HOME=str(tmp_path / "plugin-home"),
               KUBECONFIG=str(scene.config),
               PATH=os.pathsep.join([str(krew_root / "bin"), str(pybin),
                                     str(Path(scene.kube.kubectl_bin).parent), "/usr/bin", "/bin"]))

    # A user's own index: a git repository with plugins/imagepatch.yaml.
    index = tmp_path / "index"
    (index / "plugins").mkdir(parents=True)
    (index / "plugins" / "imagepatch.yaml").write_text(manifest.read_text())
    git = ["git", "-c", "user.name=release", "-c", "user.email=release@example.com"]
    run([*git, "init", "-q", "-b", "main", str(index)], env)
    run([*git, "-C", str(index), "add", "."], env)
    run([*git, "-C", str(index), "commit", "-q", "-m", "imagepatch"], env)
    run([str(krew), "index", "add", "mine", str(index)], env)
    info = run([str(krew), "info", "mine/imagepatch"], env).stdout
    assert f"VERSION: {TAG}" in info and ARCHIVE in info

    started = time.monotonic()
    out = run([str(krew), "install", f"--manifest={manifest}", f"--archive={archive}"], env)
    installed = time.monotonic() - started
    assert "Installed plugin: imagepatch" in out.stderr
    exe = krew_root / "bin" / "kubectl-imagepatch"
    assert exe.is_symlink() and (exe.resolve().parent / "LICENSE").is_file()
    assert "imagepatch" in run([str(krew), "list"], env).stdout

    started = time.monotonic()
    first = run([str(exe), "version"], env)
    first_run = time.monotonic() - started
    assert first.stdout.strip() == f"imagepatch {__version__}"
    assert "installing its locked dependencies" in first.stderr
    started = time.monotonic()
    again = run([str(exe), "version"], env)
    second_run = time.monotonic() - started
    assert again.stdout.strip() == f"imagepatch {__version__}" and not again.stderr
    assert "kubectl imagepatch" in run([str(exe), "--help"], env).stdout

    # kubectl finds the krew-installed plugin on PATH; it talks to the API server as the user.
    kubectl = scene.kube.kubectl_bin
    listed = run([kubectl, "imagepatch", "list", "--policy", scene.policy], env).stdout
    assert f"{scene.tag}-pay" in listed and f"{scene.tag}-web" not in listed
    why = run([kubectl, "imagepatch", "why", "deploy/pay", "-n", scene.ns], env).stdout
    assert f"Deployment {scene.ns}/pay is Patching" in why
    report = run([kubectl, "imagepatch", "report", "--policy", scene.policy, "-o", "json"], env)
    assert {w["name"] for w in json.loads(report.stdout)["workloads"]} == {"pay"}

    out = run([str(krew), "uninstall", "imagepatch"], env)
    assert "Uninstalled plugin: imagepatch" in out.stderr
    assert not exe.exists() and not (krew_root / "store" / "imagepatch").exists()
    print(f"\nkrew install: {installed:.2f}s; plugin first run (venv + pip install of "
          f"the locked wheels): {first_run:.1f}s; second run: {second_run:.2f}s")
