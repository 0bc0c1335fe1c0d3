"""Draw the comparison chart from the JSON the benchmark wrote. Runs in its own venv with
matplotlib (a bench-only dependency):  python chart.py benchmarks-compare.json out.png"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = (
    ("noop", ("tasks_per_s",), "10,000 no-op tasks: tasks/s (higher is better)", False),
    ("sleep", ("tasks_per_s",), "2,000 x 100 ms tasks, concurrency 50: tasks/s", False),
    (
        "latency",
        ("pickup_median_ms", "result_median_ms"),
        "one task at a time: median latency, ms (log, lower is better)",
        True,
    ),
)


def main() -> None:
    document = json.load(open(sys.argv[1]))
    results = document["results"]
    names = list(results)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 3.2 * len(PANELS)))
    for ax, (workload, keys, title, log) in zip(axes, PANELS, strict=True):
        height = 0.8 / len(keys)
        for k, key in enumerate(keys):
            values = [results[n].get(workload, {}).get(key, 0) or 0 for n in names]
            positions = [i + (k - (len(keys) - 1) / 2) * height for i in range(len(names))]
            colors = [
                "tab:green" if n.startswith("agentexec (this)") else "tab:gray" for n in names
            ]
            bars = ax.barh(positions, values, height=height, color=colors, alpha=1 - 0.4 * k)
            for bar, value in zip(bars, values, strict=True):
                label = (
                    f"{value:,.0f}" if not log else f"{value:.1f}" if value >= 1 else f"{value:.2f}"
                )
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {label}" if value else " n/a",
                    va="center",
                    fontsize=7,
                )
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_xscale("log")
            ax.legend(["pickup", "result"], fontsize=7, loc="lower right")
    meta = document["machine"]
    fig.suptitle(
        f"agentexec vs peers, {meta['cpus']} cores, 2 worker processes each, "
        f"median of {meta['runs']} run(s), {meta['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
