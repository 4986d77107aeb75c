"""The coverage gate of ``make test``: per-package line+branch totals from coverage's JSON.

``python -m tests.coverage_gate .coverage.json --min 95 imagepatch/core imagepatch/model``
prints each package's total (statements and branches, as coverage.py counts
its percentage) and exits non-zero when one is below the minimum. The
per-module table is pytest-cov's own report, printed just before.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def package_totals(report: dict, package: str) -> tuple[int, int, int]:
    """(files, covered, total) over statements and branches of files under ``package``."""
    files = covered = total = 0
    for path, data in report["files"].items():
        if f"/{package}/" not in "/" + Path(path).as_posix():
            continue
        s = data["summary"]
        files += 1
        covered += s["covered_lines"] + s.get("covered_branches", 0)
        total += s["num_statements"] + s.get("num_branches", 0)
    return files, covered, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--min", type=float, default=95.0)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    failed = []
    for package in args.packages:
        files, covered, total = package_totals(report, package)
        percent = 100.0 * covered / total if total else 0.0
        verdict = "ok" if percent >= args.min and files else "BELOW"
        print(f"coverage gate: {package}: {percent:.1f}% of {total} lines+branches "
              f"in {files} files (minimum {args.min:.0f}%): {verdict}")
        if verdict != "ok":
            failed.append(package)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
