"""The workloads every peer driver runs, with the standard library only.

A peer driver module defines its tool's task and worker setup at import (the tool's worker
command imports the same module), and a `Peer` whose hooks enqueue one task and wait for one
result. `main(peer)` starts the workers, warms them up, runs one workload and prints one JSON
line of figures on stdout. Handlers return `[start, end, pid]` (wall clock seconds).

Settings reach the module (and the worker processes that import it) through the environment:
BENCH_REDIS_URL, BENCH_QUEUE, BENCH_CONCURRENCY (per worker process, 0 = the tool's default),
BENCH_WORKERS and BENCH_DATABASE_URL (activity tracking, agentexec only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "0"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL") or None

IN_FLIGHT = 200  # enqueue calls outstanding at once, as in tests/bench/tasks.py
WARMUP_DEADLINE = 90.0


class Unavailable(Exception):
    """This peer cannot run this workload; the message says why."""


@dataclass
class Peer:
    """A tool under test. `enqueue(sleep)` returns a handle; `wait(handle, timeout)` returns
    the handler's `[start, end, pid]` and raises on timeout."""

    name: str
    worker_commands: Callable[[], list[list[str]]]
    enqueue: Callable[[float], Awaitable[Any]]
    wait: Callable[[Any, float], Awaitable[Sequence[float]]]
    connect: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    # After the results are in: wait until the tool's own record shows `count` tasks done
    # (the warm-up's included).
    settle: Callable[[int, float], Awaitable[None]] | None = None
    notes: list[str] = field(default_factory=list)
    warmed: int = 0
    """Tasks enqueued by the warm-up, which `settle` must see finished too."""


def stamp() -> float:
    return time.time()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_workers(peer: Peer, log_path: str) -> list[subprocess.Popen[bytes]]:
    log = open(log_path, "ab")
    processes = []
    for command in peer.worker_commands():
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def warm_up(peer: Peer, processes: list[subprocess.Popen[bytes]]) -> int:
    """Run small batches until results came from WORKERS distinct processes (or the
    deadline passes), so that every worker is consuming before the clock starts."""
    pids: set[float] = set()
    deadline = time.monotonic() + WARMUP_DEADLINE
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker command exited with code {process.returncode}")
        handles = [await peer.enqueue(0.01) for _ in range(2 * WORKERS)]
        peer.warmed += len(handles)
        for handle in handles:
            try:
                pids.add((await peer.wait(handle, 5.0))[2])
            except TimeoutError:
                break  # e.g. a stream consumer group created after the enqueue
        if len(pids) >= WORKERS:
            break
    if not pids:
        raise RuntimeError(f"no task completed within {WARMUP_DEADLINE:.0f} s of warm-up")
    return len(pids)


async def throughput(peer: Peer, count: int, sleep: float, timeout: float) -> dict[str, Any]:
    """Enqueue `count` tasks (IN_FLIGHT calls at a time), then wait for every result
    (IN_FLIGHT waits at a time, in enqueue order). Tasks/s = count / (first enqueue -> last
    result in hand); processed/s ends at the last handler's return instead."""
    started = time.perf_counter()
    wall_started = stamp()
    handles: list[Any] = []
    for i in range(0, count, IN_FLIGHT):
        batch = range(i, min(i + IN_FLIGHT, count))
        handles += await asyncio.gather(*(peer.enqueue(sleep) for _ in batch))
    enqueued = time.perf_counter()
    deadline = time.monotonic() + timeout
    waiting = asyncio.Semaphore(IN_FLIGHT)

    async def result(handle: Any) -> Sequence[float]:
        async with waiting:
            return await peer.wait(handle, max(0.1, deadline - time.monotonic()))

    stamps = await asyncio.gather(*(result(handle) for handle in handles))
    done = time.perf_counter()
    last_end = max(s[1] for s in stamps)
    figures: dict[str, Any] = {
        "n": count,
        "tasks_per_s": count / (done - started),
        "enqueue_per_s": count / (enqueued - started),
        "processed_per_s": count / max(1e-9, last_end - wall_started),
    }
    if peer.settle is not None:
        await peer.settle(peer.warmed + count, max(1.0, deadline - time.monotonic()))
        settled = time.perf_counter()
        figures["results_per_s"] = figures["tasks_per_s"]
        figures["tasks_per_s"] = count / (settled - started)
    return figures


async def latency(peer: Peer, count: int, budget: float) -> dict[str, Any]:
    """One task at a time on the idle pool: enqueue call -> handler start, and handler
    return -> result in hand. Stops early when `budget` seconds are spent."""
    pickup: list[float] = []
    result: list[float] = []
    deadline = time.monotonic() + budget
    for _ in range(count):
        before = stamp()
        handle = await peer.enqueue(0.0)
        start, end, _pid = await peer.wait(handle, 60.0)
        after = stamp()
        pickup.append((start - before) * 1000)
        result.append((after - end) * 1000)
        if time.monotonic() > deadline:
            break
    return {
        "n": len(pickup),
        "pickup_median_ms": statistics.median(pickup),
        "pickup_p99_ms": percentile(pickup, 0.99),
        "result_median_ms": statistics.median(result),
        "result_p99_ms": percentile(result, 0.99),
    }


async def run(peer: Peer, args: argparse.Namespace, processes: list[Any]) -> dict[str, Any]:
    if peer.connect is not None:
        await peer.connect()
    try:
        ready = await warm_up(peer, processes)
        if args.workload == "noop":
            figures = await throughput(peer, args.tasks, 0.0, args.timeout)
        elif args.workload == "sleep":
            figures = await throughput(peer, args.tasks, args.sleep, args.timeout)
        else:
            figures = await latency(peer, args.tasks, args.latency_budget)
        figures["workers_seen"] = ready
        return figures
    finally:
        if peer.close is not None:
            await peer.close()


def main(peer: Peer) -> None:
    parser = argparse.ArgumentParser(description=f"benchmark driver for {peer.name}")
    parser.add_argument("workload", choices=["noop", "sleep", "latency"])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--latency-budget", type=float, default=180.0)
    parser.add_argument("--log", default=os.devnull, help="file for the workers' output")
    args = parser.parse_args()
    out: dict[str, Any] = {"peer": peer.name, "workload": args.workload}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes = start_workers(peer, args.log)
        out.update(asyncio.run(run(peer, args, processes)))
    except Unavailable as e:
        out["error"] = str(e)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        stop_workers(processes)
    if peer.notes:
        out["notes"] = peer.notes
    print(json.dumps(out), flush=True)
    sys.exit(0)
