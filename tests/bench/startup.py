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


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def median_of(repeat: int, args: list[str], env: dict[str, str]) -> float:
    return statistics.median(timed(args, env)[0] for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true", help="Leave out `agentexec demo`.")
    options = parser.parse_args()
    python = sys.executable
    server = None
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    if not env.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        env["AGENTEXEC_REDIS_URL"] = server.url
    env["AGENTEXEC_KEY_PREFIX"] = f"startup-{uuid.uuid4().hex[:8]}"
    n = options.repeat
    rows: list[tuple[str, float]] = []
    try:
        base = median_of(n, [python, "-c", "pass"], env)
        rows.append(("python -c pass", base))
        rows.append(("import sqlalchemy", median_of(n, [python, "-c", "import sqlalchemy"], env)))
        rows.append(("import agentexec", median_of(n, [python, "-c", "import agentexec"], env)))
        rows.append(("enqueue-only process", median_of(n, [python, "-c", ENQUEUE_ONLY], env)))
        rows.append(("worker process imports", median_of(n, [python, "-c", WORKER_IMPORTS], env)))
        app = median_of(n, [python, "-c", "import tests.bench.startup_app"], env)
        rows.append(("import the user's module", app))
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
                rows.append(("agentexec demo", timed(demo, env)[0]))
    finally:
        if server is not None:
            server.close()
    print(f"{'figure':<32} {'seconds':>8} {'x pass':>8}")
    for name, seconds in rows:
        print(f"{name:<32} {seconds:8.3f} {seconds / base:8.1f}")
    print(f"pool's first task / importing the user's module: {first / app:.2f}x (target 1.5x)")


if __name__ == "__main__":
    main()
