"""Draw the scaling chart for docs/benchmarks.md from the fleet bench's JSON.

``python -m tests.bench.chart [bench-results.json] [docs/benchmarks-scaling.png]``
(``make bench-chart``). Three panels against the number of workloads: time
until every workload is evaluated, registry and ECR requests per steady
detection cycle, and the operator's peak RSS. matplotlib is the ``bench``
extra, not a dev dependency: only this script needs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.bench.fleet import only

REPO = Path(__file__).resolve().parents[2]


def draw(results: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write a file
    import matplotlib.pyplot as plt

    runs = sorted((r for r in json.loads(results.read_text())["runs"] if not r.get("by_tag")),
                  key=lambda r: r["workloads"])
    n = [r["workloads"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=100)
    ax = axes[0]
    ax.plot(n, [r["fleet"]["evaluated_seconds"] for r in runs], "o-", label="all evaluated")
    ax.plot(n, [r["cycle"]["seconds"] for r in runs], "s--", label="steady pass")
    ax.set_title("detection time (s)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(n, [sum(r["cycle"]["registry"].values()) for r in runs], "o-", label="registry")
    ax.plot(n, [only(r["cycle"]["aws"], "ecr:") for r in runs], "s--", label="ECR API")
    ax.set_title("requests per steady cycle")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(n, [r["operator"]["rss_peak_mb"] for r in runs], "o-", label="peak")
    ax.plot(n, [r["operator"]["rss_idle_mb"] for r in runs], "s--", label="idle")
    ax.axhline(150, color="grey", lw=0.8, ls=":", label="target")
    ax.set_title("operator RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("workloads")
        ax.set_xscale("log")
        ax.set_xticks(n, [str(x) for x in n])
        ax.minorticks_off()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else REPO / "bench-results.json"
    png = Path(argv[1]) if len(argv) > 1 else REPO / "docs" / "benchmarks-scaling.png"
    draw(results, png)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
