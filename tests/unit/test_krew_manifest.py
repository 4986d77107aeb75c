"""deploy/krew/imagepatch.yaml is a well-formed krew Plugin manifest.

The rules are krew's own (its manifest validation, krew.sigs.k8s.io "Writing
Krew plugin manifests"): the apiVersion and kind, the name equal to the file's
name, a v-prefixed semantic version, a short description, and per platform a
valid label selector, an https uri, a sha256 of 64 lowercase hex digits, a
``bin`` that some ``files`` entry installs, relative ``from``/``to`` paths.
Beyond krew: the plugin installs ``kubectl-imagepatch``, the name pyproject's
[project.scripts] gives the same program, and each uri names the version.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "krew" / "imagepatch.yaml"
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
OSES = {"linux", "darwin", "windows"}
ARCHES = {"amd64", "arm64", "386", "arm", "ppc64le", "s390x"}


def test_the_krew_manifest_is_well_formed() -> None:
    doc = yaml.safe_load(MANIFEST.read_text())
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin"
    assert doc["metadata"]["name"] == MANIFEST.stem == "imagepatch"
    spec = doc["spec"]
    assert SEMVER.match(spec["version"]), spec["version"]
    assert spec["shortDescription"] and len(spec["shortDescription"]) <= 80
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
        assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"]), platform["sha256"]
        assert platform["bin"] == "kubectl-imagepatch" and platform["bin"] in scripts
        installed = set()
        for entry in platform["files"]:
            for key in ("from", "to"):
                assert not entry[key].startswith("/") and ".." not in entry[key].split("/")
            installed.add(entry["from"].rsplit("/", 1)[-1] if entry["to"] == "." else entry["to"])
        assert platform["bin"] in installed, "the bin must be one of the installed files"
