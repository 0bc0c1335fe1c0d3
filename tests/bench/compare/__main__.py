"""Side-by-side benchmark: agentexec against the task queues users would pick instead.

    .venv/bin/python -m tests.bench.compare [--runs 3] [--quick] [--only arq,taskiq]

Each tool runs in its own virtual environment (built on demand under .bench-venvs/), against
one private redis-server, through a small driver under peers/ that starts the tool's workers
the documented default way (2 processes) and prints one JSON line of figures. Workloads:
`noop` (10,000 no-op tasks), `sleep` (2,000 tasks of 100 ms at concurrency 50) and `latency`
(500 tasks one at a time). Each figure is the median over --runs runs. Writes a markdown
table, the raw figures (JSON) and a chart (PNG) into docs/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from agentexec.embedded import EmbeddedRedis

from . import report, venvs
from .lineup import CHART_REQUIREMENTS, LINEUP, Entry

ROOT = Path(__file__).resolve().parents[3]
PEERS = Path(__file__).resolve().parent / "peers"
WORKLOADS = ("noop", "sleep", "latency")
SLEEP_CONCURRENCY_PER_PROCESS = 25  # x 2 processes = 50 tasks in flight


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median taken)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, 1 run")
    parser.add_argument("--only", default="", help="comma-separated name fragments of tools")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument("--sleep-tasks", type=int, default=2_000)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument(
        "--latency-budget", type=float, default=180, help="seconds per latency run at most"
    )
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds per run at most")
    parser.add_argument(
        "--database-url",
        default="",
        help="SQL database for activity tracking (sync SQLAlchemy URL, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test); default: a SQLite file per run",
    )
    parser.add_argument("--venvs", type=Path, default=ROOT / ".bench-venvs")
    parser.add_argument(
        "--out", type=Path, help="where results go (default docs/, or .bench-runs/ with --quick)"
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="only redraw the table and chart from the JSON"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / (".bench-runs" if args.quick else "docs")
    if args.quick:
        args.runs = 1
        args.noop_tasks, args.sleep_tasks, args.latency_tasks = 500, 200, 50
        args.latency_budget = 20
    return args


def selected(args: argparse.Namespace) -> list[Entry]:
    wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    return [e for e in LINEUP if not wanted or any(w in e.name.lower() for w in wanted)]


def drop_tables(url: str, prefix: str) -> None:
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine, only=lambda name, _: name.startswith(prefix))
        metadata.drop_all(engine)
    finally:
        engine.dispose()


def run_driver(
    python: Path, entry: Entry, workload: str, args: argparse.Namespace, redis_url: str, work: Path
) -> dict[str, Any]:
    """One run in its own session (process group), killed whole when it overruns."""
    run_id = uuid.uuid4().hex[:8]
    tasks = {"noop": args.noop_tasks, "sleep": args.sleep_tasks, "latency": args.latency_tasks}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTEXEC_", "BENCH_"))}
    env.update(
        BENCH_REDIS_URL=redis_url,
        AGENTEXEC_REDIS_URL=redis_url,
        BENCH_QUEUE=f"bench-{run_id}",
        BENCH_WORKERS="2",
        BENCH_CONCURRENCY=str(SLEEP_CONCURRENCY_PER_PROCESS if workload == "sleep" else 0),
        PYTHONPATH=str(PEERS),
        PYTHONUNBUFFERED="1",
    )
    prefix = ""
    if entry.tracking:
        if args.database_url:
            prefix = f"bench_{run_id}_"
            env.update(BENCH_DATABASE_URL=args.database_url, AGENTEXEC_TABLE_PREFIX=prefix)
        else:
            env["BENCH_DATABASE_URL"] = f"sqlite:///{work / f'activity-{run_id}.db'}"
    log = work / f"{entry.driver.removesuffix('.py')}-{workload}-{run_id}.log"
    command = [str(python), str(PEERS / entry.driver), workload, "--tasks", str(tasks[workload])]
    command += ["--timeout", str(args.run_timeout), "--latency-budget", str(args.latency_budget)]
    command += ["--log", str(log)]
    process = subprocess.Popen(
        command,
        cwd=PEERS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=args.run_timeout + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"error": f"timed out after {args.run_timeout + 60:.0f} s"}
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stray workers of this run, if any
        except ProcessLookupError:
            pass
        if prefix:
            drop_tables(args.database_url, prefix)
        for database in work.glob("activity-*.db*"):
            database.unlink()
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            figures: dict[str, Any] = json.loads(line)
            if "error" in figures and log.exists():
                figures["log"] = str(log)
            return figures
    tail = (stderr.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
    return {"error": f"driver printed no figures: {tail}"}


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over the runs that succeeded."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[0]["error"] if runs else "not run", "runs": 0}
    keys = [k for k, v in good[0].items() if isinstance(v, int | float) and k != "workers_seen"]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in good) for k in keys}
    out["runs"] = len(good)
    out["workers_seen"] = min(r.get("workers_seen", 0) for r in good)
    if len(good) < len(runs):
        out["failed_runs"] = [r["error"] for r in runs if "error" in r]
    if good[0].get("notes"):
        out["notes"] = good[0]["notes"]
    return out


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the Redis server has used so far (user + system, main thread included)."""
    info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def machine(redis_url: str) -> dict[str, Any]:
    info = redis.Redis.from_url(redis_url).info("server")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis": info.get("redis_version"),
        "loadavg_start": os.getloadavg(),
    }


def main() -> None:
    args = parse_args()
    if args.report:
        document = json.loads((args.out / "benchmarks-compare.json").read_text())
        (args.out / "benchmarks-compare.md").write_text(report.markdown(document))
        print(report.markdown(document))
        if not args.no_chart:
            chart(args, document)
        return
    # SIGTERM unwinds like Ctrl-C, so that every run's process group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
    entries = selected(args)
    args.venvs.mkdir(parents=True, exist_ok=True)
    work = ROOT / ".bench-runs" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)  # worker logs stay here
    results: dict[str, dict[str, Any]] = {}
    server = EmbeddedRedis().start()
    client = redis.Redis.from_url(server.url)
    meta = machine(server.url)
    meta.update(runs=args.runs, quick=args.quick, latency_tasks=args.latency_tasks)
    meta["sql"] = args.database_url.split("@")[-1] if args.database_url else "a SQLite file"
    print(f"comparing {len(entries)} tools, {args.runs} run(s) each; Redis {server.url}")
    started = time.monotonic()
    try:
        for entry in entries:
            results[entry.name] = {}
            try:
                python = venvs.python_for(entry, args.venvs)
            except (venvs.InstallError, subprocess.TimeoutExpired) as e:
                print(f"  {entry.name}: install failed: {e}")
                for workload in workloads:
                    results[entry.name][workload] = {"error": f"install failed: {e}", "runs": 0}
                continue
            for workload in workloads:
                runs = []
                for i in range(args.runs):
                    client.flushall()
                    cpu = redis_cpu(client)
                    figures = run_driver(python, entry, workload, args, server.url, work)
                    if "n" in figures and workload != "latency":
                        # Includes the warm-up's few tasks: a slight overestimate.
                        spent = redis_cpu(client) - cpu
                        figures["redis_cpu_us_per_task"] = spent * 1e6 / figures["n"]
                    runs.append(figures)
                    print(
                        f"  {entry.name} {workload} run {i + 1}: {report.brief(figures)}",
                        flush=True,
                    )
                    if "error" in figures and figures["error"].startswith("n/a"):
                        break  # the same answer every time
                results[entry.name][workload] = combine(runs)
                save(args, {"machine": meta, "results": results})  # a killed run keeps these
    finally:
        client.close()
        server.close()
    meta["loadavg_end"] = os.getloadavg()
    meta["minutes"] = round((time.monotonic() - started) / 60, 1)
    document = {"machine": meta, "results": results}
    save(args, document)
    table = report.markdown(document)
    (args.out / "benchmarks-compare.md").write_text(table)
    print()
    print(table)
    print(f"worker logs: {work}")
    if not args.no_chart:
        chart(args, document)


def save(args: argparse.Namespace, document: dict[str, Any]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks-compare.json").write_text(json.dumps(document, indent=1) + "\n")


def chart(args: argparse.Namespace, document: dict[str, Any]) -> None:
    try:
        python = venvs.ensure(args.venvs, "chart", CHART_REQUIREMENTS, ("python3",))
    except (venvs.InstallError, subprocess.TimeoutExpired) as e:
        print(f"no chart: matplotlib did not install ({e})")
        return
    png = args.out / "benchmarks-compare.png"
    script = Path(__file__).resolve().parent / "chart.py"
    result = subprocess.run(
        [str(python), str(script), str(args.out / "benchmarks-compare.json"), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        print(f"no chart: {result.stderr.strip().splitlines()[-1:]}")
    else:
        print(f"chart: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")


if __name__ == "__main__":
    main()
