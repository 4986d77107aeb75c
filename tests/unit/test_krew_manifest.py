"""deploy/krew/imagepatch.yaml is a well-formed krew Plugin manifest, and so is what a release makes of it.

The rules are krew's own (its manifest validation, krew.sigs.k8s.io "Writing
Krew plugin manifests"): the apiVersion and kind, the name equal to the file's
name, a v-prefixed semantic version, a one-line short description, and per
platform a valid label selector, an https uri, a sha256 of 64 lowercase hex
digits, a ``bin`` that some ``files`` entry installs, relative ``from``/``to``
paths. Beyond krew: the plugin installs ``kubectl-imagepatch``, the name
pyproject's [project.scripts] gives the same program, with LICENSE beside it,
and each uri names the version.

The checked-in manifest is the template ``make krew-archive`` (release/krew.py)
fills: until a release publishes the archive its uri and sha256 are
placeholders (an ``example.invalid`` uri, a sha256 of zeros), which no krew can
download or accept by mistake. What the release step writes passes the same
rules with a real sha256 and keeps every other line, comments included.
(That krew installs the archive: tests/integration/test_krew_install.py.)
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from release import krew

from imagepatch import __version__

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "krew" / "imagepatch.yaml"
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
OSES = {"linux", "darwin", "windows"}
ARCHES = {"amd64", "arm64", "386", "arm", "ppc64le", "s390x"}
PLACEHOLDER_SHA256 = "0" * 64


def check_manifest(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin"
    assert doc["metadata"]["name"] == MANIFEST.stem == "imagepatch"
    spec = doc["spec"]
    assert SEMVER.match(spec["version"]), spec["version"]
    assert spec["version"] == f"v{__version__}", "the manifest's version is the package's"
    short = spec["shortDescription"]
    assert short and len(short) <= 80 and "\n" not in short
    assert spec["platforms"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for platform in spec["platforms"]:
        selector = platform["selector"]
        labels = dict(selector.get("matchLabels") or {})
        for expr in selector.get("matchExpressions") or []:
            assert expr["operator"] in ("In", "NotIn", "Exists", "DoesNotExist"), expr
            assert expr["key"] in ("os", "arch"), expr
            allowed = OSES if expr["key"] == "os" else ARCHES
            assert set(expr.get("values") or []) <= allowed, expr
        assert set(labels) <= {"os", "arch"}
        assert labels or selector.get("matchExpressions"), "a platform must select something"
        assert platform["uri"].startswith("https://") and spec["version"] in platform["uri"]
        assert platform["uri"].endswith("/" + krew.archive_name(spec["version"]))
        assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"]), platform["sha256"]
        assert platform["bin"] == "kubectl-imagepatch" and platform["bin"] in scripts
        installed = set()
        for entry in platform["files"]:
            for key in ("from", "to"):
                assert not entry[key].startswith("/") and ".." not in entry[key].split("/")
            installed.add(entry["from"].rsplit("/", 1)[-1] if entry["to"] == "." else entry["to"])
        assert platform["bin"] in installed, "the bin must be one of the installed files"
        assert "LICENSE" in installed


def test_the_checked_in_manifest_is_a_well_formed_template() -> None:
    doc = yaml.safe_load(MANIFEST.read_text())
    check_manifest(doc)
    for platform in doc["spec"]["platforms"]:
        # Placeholders until a release fills them: nothing can download or match them.
        assert platform["uri"].startswith("https://example.invalid/")
        assert platform["sha256"] == PLACEHOLDER_SHA256


def test_the_release_step_fills_version_uri_and_sha256_and_keeps_the_rest() -> None:
    template = MANIFEST.read_text()
    tag = f"v{__version__}"
    sha256 = hashlib.sha256(b"an archive").hexdigest()
    uri = f"https://github.com/imagepatch/imagepatch/releases/download/{tag}/{krew.archive_name(tag)}"
    filled = krew.fill_manifest(template, tag, uri, sha256)
    doc = yaml.safe_load(filled)
    check_manifest(doc)
    assert [(p["uri"], p["sha256"]) for p in doc["spec"]["platforms"]] == [(uri, sha256)]
    changed = [(a, b) for a, b in zip(template.splitlines(), filled.splitlines(), strict=True)
               if a != b]
    assert [a.split(":")[0].strip() for a, _ in changed] == ["uri", "sha256"]
    assert "# tests/unit/test_krew_manifest.py" in filled, "the comments are kept"


def test_the_plugins_lock_is_the_runtime_lock_less_what_only_the_operator_needs() -> None:
    lock = (REPO / "requirements" / "runtime.lock").read_text()
    cut = krew.plugin_lock(lock)
    pins = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", cut, re.M))
    # The plugin's imports and what they need, each with the runtime lock's pin and hashes.
    for name in ("kubernetes", "pydantic-core", "cryptography", "httpx", "pyyaml", "croniter",
                 "urllib3", "certifi"):
        assert name in pins, name
        block = re.search(rf"^{re.escape(name)}==.*?(?=^\S|\Z)", lock, re.M | re.S)
        assert block and block[0].rstrip("\n") in cut
    for name in ("kopf", "boto3", "botocore", "stamina", "prometheus-client", "ruamel-yaml"):
        assert name not in pins, name
    assert "--hash=sha256:" in cut


def test_the_release_step_refuses_what_krew_or_an_index_would_not_take() -> None:
    template = MANIFEST.read_text()
    tag, good = f"v{__version__}", hashlib.sha256(b"").hexdigest()
    uri = f"https://example.com/{krew.archive_name(tag)}"
    for bad_uri, sha256, message in ((uri, "ABC", "not a sha256"),
                                     ("http://example.com/a.tar.gz", good, "https uri")):
        with pytest.raises(ValueError, match=message):
            krew.fill_manifest(template, tag, bad_uri, sha256)
    with pytest.raises(ValueError, match="lines matching"):
        krew.fill_manifest(template.replace("    uri: ", "    url: "), tag, uri, good)
    with pytest.raises(ValueError, match="not in requirements/runtime.lock"):
        krew.plugin_lock("six==1.17.0 \\\n    --hash=sha256:00\n")
