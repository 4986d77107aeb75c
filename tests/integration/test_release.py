"""A release is one version, locked dependencies and a changelog.

* One version: ``operator/imagepatch/__init__.py`` is the source; pyproject
  reads it (dynamic version), and the chart's ``version``/``appVersion``, the
  Dockerfile's default ``VERSION`` label, ``deploy/``'s image tag, the README
  status line and the changelog's latest release all equal it (the chart cannot
  read Python, so this test keeps them in step); ``imagepatch version`` prints it.
* ``CHANGELOG.md`` follows Keep a Changelog, with an **Upgrading** section for
  every release.
* The locks: every requirement carries hashes, every runtime dependency of
  pyproject is pinned, the Dockerfile installs nothing else (``--require-hashes``,
  wheels only, its own wheel with ``--no-deps``), and ``requirements/lock.sh
  --check`` (``make lint``) fails when pyproject and the lock disagree. That
  last test asks PyPI, as ``make lock`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from imagepatch import __version__

REPO = Path(__file__).resolve().parents[2]
LOCKS = ("runtime.lock", "dev.lock", "build.lock")


def test_one_version_everywhere() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "imagepatch.__version__"}

    chart = yaml.safe_load((REPO / "charts" / "imagepatch" / "Chart.yaml").read_text())
    assert str(chart["version"]) == __version__
    assert str(chart["appVersion"]) == __version__

    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.M) == [__version__]
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile

    deployment = (REPO / "deploy" / "deployment.yaml").read_text()
    assert re.findall(r"image: ghcr\.io/imagepatch/imagepatch:([^@\s]+)", deployment) == [__version__]

    major_minor = ".".join(__version__.split(".")[:2])
    assert f"Status: early (v{major_minor})" in (REPO / "README.md").read_text()

    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert releases[0] == __version__, "the newest CHANGELOG.md release is the package's version"


def test_imagepatch_version_prints_the_version() -> None:
    for argv in (["version"], ["--version"]):
        out = subprocess.run([sys.executable, "-m", "imagepatch", *argv], capture_output=True,
                             text=True, check=True, timeout=60)
        assert out.stdout.strip() == f"imagepatch {__version__}"


def test_changelog_keeps_a_changelog_with_upgrading_sections() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    assert "## [Unreleased]" in text
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    releases = {}
    for section in sections:
        head, _, body = section.partition("\n")
        m = re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})", head)
        if m:
            releases[m[1]] = body
    assert list(releases) == ["0.3.0", "0.2.0", "0.1.0"], list(releases)
    for version, body in releases.items():
        kinds = re.findall(r"^### (\w+)", body, re.M)
        assert "Upgrading" in kinds, f"{version} has no Upgrading section"
        assert set(kinds) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security", "Upgrading"}
        assert f"[{version}]: https://" in text, f"no link reference for {version}"
    v02 = releases["0.2.0"]
    for subject in ("tagPolicy", "imagepatch.dev/finalizer", "RBAC"):
        assert subject in v02, subject
    assert "RBAC" in releases["0.3.0"]


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (pyproject says ruamel.yaml, the lock ruamel-yaml)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(lock: Path) -> dict[str, list[str]]:
    """normalized name -> its --hash values, per requirement line of a uv/pip-compile lock."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        m = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==\S+", block)
        if m:
            found[normalized(m[1])] = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
    return found


def test_every_locked_requirement_is_pinned_with_hashes() -> None:
    runtime = requirements(REPO / "requirements" / "runtime.lock")
    dev = requirements(REPO / "requirements" / "dev.lock")
    for name in LOCKS:
        for req, hashes in requirements(REPO / "requirements" / name).items():
            assert hashes, f"{req} in requirements/{name} has no hash"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        name = normalized(re.match(r"[A-Za-z0-9_.-]+", dep)[0])
        assert name in runtime, f"{name} (pyproject) is not in requirements/runtime.lock"
    for dep in project["optional-dependencies"]["dev"]:
        name = normalized(re.match(r"[A-Za-z0-9_.-]+", dep)[0])
        assert name in dev, f"{name} (dev extra) is not in requirements/dev.lock"
    # dev.lock is constrained by runtime.lock: the same pins and hashes.
    for name, hashes in runtime.items():
        assert dev.get(name) == hashes, f"{name} differs between runtime.lock and dev.lock"


def test_dockerfile_installs_only_hashed_locked_dependencies() -> None:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip(?: --python \S+)? install ([^&\n]*)", text)
    assert len(installs) == 3, installs
    for args in installs:
        if "--no-deps" in args:
            assert re.search(r"--no-deps /wheels/imagepatch-\*\.whl", args), args
        else:
            assert "--require-hashes" in args and "--only-binary :all:" in args, args
            assert re.search(r"-r requirements/(runtime|build)\.lock", args), args
    assert re.search(r"pip wheel [^&\n]*--no-deps --no-build-isolation", text)
    assert "cyclonedx-py environment" in text


def test_lock_check_fails_when_pyproject_and_the_lock_disagree(tmp_path: Path) -> None:
    for rel in ("pyproject.toml", "README.md", "operator/imagepatch/__init__.py", "requirements"):
        src, dst = REPO / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    uv = subprocess.run(["bash", str(REPO / "requirements" / "uv.sh")], capture_output=True,
                        text=True, check=True, timeout=300).stdout.strip().splitlines()[-1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "UV": uv,
           "UV_CACHE_DIR": str(Path.home() / ".cache" / "uv")}
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "UV_NATIVE_TLS"):
        if (value := os.environ.get(var)) is not None:
            env[var] = value

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "requirements/lock.sh", "--check"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    agreed = check()
    assert agreed.returncode == 0, agreed.stderr[-3000:]
    assert "locks match" in agreed.stderr

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pyyaml>=6",', '"pyyaml>=6",\n  "tomli-w>=1",'))
    added = check()
    assert added.returncode != 0
    assert "+tomli-w==" in added.stderr
    assert "requirements/runtime.lock does not match" in added.stderr and "make lock" in added.stderr
