"""Start-up benchmark: what a user waits for before the first task runs.

    python -m tests.bench.startup [--repeat 3]

Each figure is the median wall time of `--repeat` fresh processes, printed beside the same
machine's `python -c pass` and `python -c "import sqlalchemy"`. The pool figure is measured
inside a process that already imported the user's module (`tests.bench.startup_app`): from
`pool.start()` to the first task's result, against importing that module once in a fresh
process. Uses a private redis-server unless AGENTEXEC_REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from agentexec.embedded import EmbeddedRedis

ENQUEUE_ONLY = """
import asyncio, agentexec as ax
from pydantic import BaseModel
class Ping(BaseModel):
    n: int = 0
async def main():
    await ax.enqueue("ping", Ping(), queue_name="startup-bench-enqueue")
asyncio.run(main())
"""

WORKER_IMPORTS = "import agentexec.workers.worker"

FIRST_TASK = """
import asyncio, time
import agentexec as ax
from tests.bench.startup_app import Ping, pool
started = time.perf_counter()
pool.start()
serving = time.perf_counter()
async def first():
    task = await ax.enqueue("ping", Ping(n=1))
    return await ax.get_result(task, timeout=120)
assert asyncio.run(first()) == 2
done = time.perf_counter()
pool.shutdown()
print(f"{serving - started:.4f} {done - started:.4f}")
"""


CPU: dict[str, float] = {}
"""CPU seconds (user + system) of each figure's processes, median: steadier than wall time on
a loaded machine."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout, _children_cpu() - cpu


def median_of(repeat: int, args: list[str], env: dict[str, str], name: str) -> float:
    runs = [timed(args, env) for _ in range(repeat)]
    CPU[name] = statistics.median(r[2] for r in runs)
    return statistics.median(r[0] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true", help="Leave out `agentexec demo`.")
    options = parser.parse_args()
    python = sys.executable
    server = None
    path = [p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    if not env.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        env["AGENTEXEC_REDIS_URL"] = server.url
    env["AGENTEXEC_KEY_PREFIX"] = f"startup-{uuid.uuid4().hex[:8]}"
    n = options.repeat
    rows: list[tuple[str, float]] = []
    try:
        commands = [
            ("python -c pass", "pass"),
            ("import sqlalchemy", "import sqlalchemy"),
            ("import agentexec", "import agentexec"),
            ("enqueue-only process", ENQUEUE_ONLY),
            ("worker process imports", WORKER_IMPORTS),
            ("import the user's module", "import tests.bench.startup_app"),
        ]
        for name, code in commands:
            rows.append((name, median_of(n, [python, "-c", code], env, name)))
        base, app = rows[0][1], rows[-1][1]
        runs = [timed([python, "-c", FIRST_TASK], env)[1].split() for _ in range(n)]
        serving = statistics.median(float(r[0]) for r in runs)
        first = statistics.median(float(r[1]) for r in runs)
        rows.append(("pool of 2: start() returns", serving))
        rows.append(("pool of 2: first task's result", first))
        if not options.skip_demo:
            with tempfile.TemporaryDirectory() as scratch:
                demo = [
                    python, "-m", "agentexec.cli", "--log-level", "WARNING", "demo",
                    "--database", os.path.join(scratch, "demo.db"),
                ]  # fmt: skip
                elapsed, _, cpu = timed(demo, env)
                rows.append(("agentexec demo", elapsed))
                CPU["agentexec demo"] = cpu
    finally:
        if server is not None:
            server.close()
    print(f"{'figure':<32} {'wall s':>8} {'x pass':>8} {'cpu s':>8}")
    for name, seconds in rows:
        cpu = f"{CPU[name]:8.3f}" if name in CPU else f"{'':>8}"
        print(f"{name:<32} {seconds:8.3f} {seconds / base:8.1f} {cpu}")
    print(f"pool's first task / importing the user's module: {first / app:.2f}x (target 1.5x)")


if __name__ == "__main__":
    main()
