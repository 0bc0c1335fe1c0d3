"""The comparison table: each tool's figures and the ratio ours/peer."""

from __future__ import annotations

from typing import Any

# (workload, figure, heading, unit, higher is better)
COLUMNS = (
    ("noop", "tasks_per_s", "no-op tasks/s", "", True),
    ("sleep", "tasks_per_s", "100 ms tasks/s", "", True),
    ("latency", "pickup_median_ms", "pickup median", " ms", False),
    ("latency", "pickup_p99_ms", "pickup p99", " ms", False),
    ("latency", "result_median_ms", "result median", " ms", False),
    ("latency", "result_p99_ms", "result p99", " ms", False),
)
OURS = ("agentexec (this) + SQL", "agentexec (this)")


def number(value: float, unit: str) -> str:
    if unit:
        return f"{value:,.1f}{unit}" if value >= 10 else f"{value:.2f}{unit}"
    return f"{value:,.0f}"


def brief(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"FAILED: {figures['error']}"
    if "tasks_per_s" in figures:
        text = f"{figures['tasks_per_s']:,.0f} tasks/s (enqueue {figures['enqueue_per_s']:,.0f}/s"
        if "redis_cpu_us_per_task" in figures:
            text += f", Redis CPU {figures['redis_cpu_us_per_task']:.0f} µs/task"
        return text + ")"
    return (
        f"pickup {figures['pickup_median_ms']:.2f}/{figures['pickup_p99_ms']:.2f} ms, result "
        f"{figures['result_median_ms']:.2f}/{figures['result_p99_ms']:.2f} ms "
        f"(median/p99, n={figures['n']})"
    )


def reference(results: dict[str, dict[str, Any]], workload: str) -> tuple[str, dict[str, Any]]:
    """Ours with activity tracking when it ran, else ours without."""
    for name in OURS:
        figures = results.get(name, {}).get(workload, {})
        if figures and "error" not in figures:
            return name, figures
    return "", {}


def cell(name: str, results: dict[str, dict[str, Any]], column: tuple[Any, ...]) -> str:
    workload, key, _, unit, _ = column
    figures = results[name].get(workload)
    if not figures:
        return "not run"
    if "error" in figures:
        first = next(c for c in COLUMNS if c[0] == workload)
        return figures["error"] if column is first else ""
    text = number(figures[key], unit)
    _, ours = reference(results, workload)
    if ours and name not in OURS and figures[key] > 0:
        text += f" ({ours[key] / figures[key]:.2g}x)"
    return text


def markdown(document: dict[str, Any]) -> str:
    results = document["results"]
    meta = document["machine"]
    load_end = meta.get("loadavg_end", meta["loadavg_start"])[0]
    lines = [
        f"Measured {meta['date']} on {meta['cpus']} cores, Python {meta['python']}, Redis "
        f"{meta['redis']}; median of {meta['runs']} run(s); load average "
        f"{meta['loadavg_start'][0]:.1f} at the start, {load_end:.1f} at the end"
        f"{' (quick smoke run, small N)' if meta['quick'] else ''}. Activity tracking: "
        f"{meta['sql']}." + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "| tool | " + " | ".join(c[2] for c in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for name in results:
        lines.append(f"| {name} | " + " | ".join(cell(name, results, c) for c in COLUMNS) + " |")
    ours_names = sorted({reference(results, w)[0] for w in ("noop", "sleep", "latency")} - {""})
    lines += [
        "",
        f"In brackets: ours / peer, with ours = {' or '.join(ours_names) or 'n/a'} (with activity "
        "tracking when it ran). Above 1 is better for ours in throughput, below 1 in latency. "
        "Pickup: enqueue call to handler start; result: handler return to result in hand.",
    ]
    notes = []
    for name, by_workload in results.items():
        for workload, figures in by_workload.items():
            if figures.get("failed_runs"):
                notes.append(f"{name} {workload}: runs failed: {'; '.join(figures['failed_runs'])}")
            wanted = meta.get("latency_tasks", 500)
            if workload == "latency" and figures.get("n") and figures["n"] < wanted:
                notes.append(f"{name}: latency over {figures['n']:.0f} tasks (time budget)")
        for workload in ("noop", "sleep"):
            figures = by_workload.get(workload, {})
            if "results_per_s" in figures:
                notes.append(
                    f"{name} {workload}: results in hand at {figures['results_per_s']:,.0f} "
                    f"tasks/s; the table counts until the activity read model showed every "
                    f"task finished"
                )
        first = next(iter(by_workload.values()), {})
        if first.get("notes"):
            notes.append(f"{name}: {', '.join(first['notes'])}")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    spent = [
        f"{name} {by_workload['noop']['redis_cpu_us_per_task']:.0f} µs"
        for name, by_workload in results.items()
        if "redis_cpu_us_per_task" in by_workload.get("noop", {})
    ]
    if spent:
        lines += ["", f"Redis CPU per no-op task (server user + system time): {', '.join(spent)}."]
    return "\n".join(lines) + "\n"
