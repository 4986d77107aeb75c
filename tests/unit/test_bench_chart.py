"""The scaling chart is drawn from the bench's JSON (skipped without the bench extra)."""

from __future__ import annotations

import json

import pytest

from tests.bench import chart


def run(n: int, *, by_tag: bool = False) -> dict:
    return {"workloads": n, "by_tag": by_tag, "fleet": {"evaluated_seconds": n / 10}, "cycle": {
        "seconds": 6.5, "registry": {"HEAD manifest": 5}, "aws": {"ecr:DescribeImageScanFindings": 100}},
        "operator": {"rss_peak_mb": 140 + n / 20, "rss_idle_mb": 138 + n / 20}}


def test_chart_is_a_png_from_the_results(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    results, png = tmp_path / "bench-results.json", tmp_path / "out" / "chart.png"
    results.write_text(json.dumps({"runs": [run(1000), run(100), run(3000, by_tag=True),
                                                run(1000, by_tag=True)]}))
    assert chart.main([str(results), str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
