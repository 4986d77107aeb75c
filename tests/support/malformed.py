"""The folder of malformed inputs (``tests/data/``), read as test tables.

``policy_cases()`` yields each malformed ImagePatchPolicy spec in
``tests/data/policies/`` with what its ``expected.yaml`` entry says: ``crd``,
the text the API server's rejection contains, and ``model``, the field and
message of the ``SpecError`` that ``model.policy`` raises. The CRD schema
tests and the policy-model tests both read this one folder, so the two never
drift into two copied tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parent.parent / "data"


def policy_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    folder = DATA / "policies"
    expected = yaml.safe_load((folder / "expected.yaml").read_text())
    files = {p.name for p in folder.glob("*.yaml") if p.name != "expected.yaml"}
    if files != set(expected):
        raise AssertionError(f"tests/data/policies: files and expected.yaml differ: {files ^ set(expected)}")
    return [
        (name, yaml.safe_load((folder / name).read_text()), expected[name])
        for name in sorted(files)
    ]
