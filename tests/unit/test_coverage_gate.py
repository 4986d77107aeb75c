"""The coverage gate of ``make test`` (tests/coverage_gate.py) on a small coverage report."""

from __future__ import annotations

import json

from tests.coverage_gate import main, package_totals

REPORT = {"files": {
    "operator/imagepatch/core/a.py": {"summary": {"covered_lines": 90, "num_statements": 100,
                                                  "covered_branches": 8, "num_branches": 10}},
    "operator/imagepatch/model/b.py": {"summary": {"covered_lines": 50, "num_statements": 50,
                                                   "covered_branches": 0, "num_branches": 0}},
    "operator/imagepatch/adapters/c.py": {"summary": {"covered_lines": 0, "num_statements": 80}},
}}


def test_totals_count_lines_and_branches_of_one_package() -> None:
    assert package_totals(REPORT, "imagepatch/core") == (1, 98, 110)
    assert package_totals(REPORT, "imagepatch/model") == (1, 50, 50)


def test_the_gate_fails_below_the_minimum_and_passes_above(tmp_path, capsys) -> None:
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(REPORT))
    assert main([str(path), "--min", "95", "imagepatch/core", "imagepatch/model"]) == 1
    assert "imagepatch/core: 89.1%" in capsys.readouterr().out
    assert main([str(path), "--min", "85", "imagepatch/core", "imagepatch/model"]) == 0
    assert main([str(path), "--min", "10", "imagepatch/missing"]) == 1  # no files: no pass
