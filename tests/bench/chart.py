"""Draw the scaling chart for docs/benchmarks.md from the fleet bench's JSON.

``python -m tests.bench.chart [bench-results.json] [docs/benchmarks-scaling.png]``
(``make bench-chart``). Three panels against the number of workloads: time
until every workload is evaluated, registry and ECR requests per steady
detection cycle, and the operator's peak RSS; one line per fleet in the
results (pinned digests, deployed by tag). matplotlib is the ``bench``
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

    everything = sorted(json.loads(results.read_text())["runs"], key=lambda r: r["workloads"])
    fleets = {label: runs for label, by_tag in (("by digest", False), ("by tag", True))
              if (runs := [r for r in everything if bool(r.get("by_tag")) == by_tag])}
    n = sorted({r["workloads"] for runs in fleets.values() for r in runs})
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=100)
    for (label, runs), colour in zip(fleets.items(), ("C0", "C1"), strict=False):
        at = [r["workloads"] for r in runs]
        ax = axes[0]
        ax.plot(at, [r["fleet"]["evaluated_seconds"] for r in runs], "o-", color=colour,
                label=f"all evaluated, {label}")
        ax.plot(at, [r["cycle"]["seconds"] for r in runs], "s--", color=colour,
                label=f"steady pass, {label}")
        ax = axes[1]
        ax.plot(at, [sum(r["cycle"]["registry"].values()) for r in runs], "o-", color=colour,
                label=f"registry, {label}")
        ax.plot(at, [only(r["cycle"]["aws"], "ecr:") for r in runs], "s--", color=colour,
                label=f"ECR API, {label}")
        ax = axes[2]
        ax.plot(at, [r["operator"]["rss_peak_mb"] for r in runs], "o-", color=colour,
                label=f"peak, {label}")
        ax.plot(at, [r["operator"]["rss_idle_mb"] for r in runs], "s--", color=colour,
                label=f"idle, {label}")
    axes[0].set_title("detection time (s)")
    axes[1].set_title("requests per steady cycle")
    axes[1].set_ylim(bottom=0)
    axes[2].axhline(150, color="grey", lw=0.8, ls=":", label="target")
    axes[2].set_title("operator RSS (MiB)")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.legend(fontsize=7)
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
