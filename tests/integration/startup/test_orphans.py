"""Worker processes stop when their pool's process dies, however it died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import agentexec as ax
from tests.support.waiting import scaled, wait_for

APP = """
import sys
from uuid import UUID
from pydantic import BaseModel
import agentexec as ax

class Job(BaseModel):
    n: int

pool = ax.Pool(num_workers=2)

@pool.task("noop")
async def noop(agent_id: UUID, context: Job) -> int:
    return context.n

if __name__ == "__main__":
    pool.start()
    print(" ".join(map(str, pool.worker_pids)), flush=True)
    sys.stdin.read()  # until the test kills this process
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


def test_workers_stop_when_the_pool_process_is_killed(redis_conf: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": "2",
    }
    app = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        assert app.stdout is not None
        line = app.stdout.readline()
        workers = [int(pid) for pid in line.split()]
        assert len(workers) == 2, line + (app.stderr.read() if app.poll() is not None else "")
        assert all(map(_alive, workers))

        app.send_signal(signal.SIGKILL)  # no handler runs: only the kernel closes its pipes
        app.wait(timeout=scaled(10))

        wait_for(
            lambda: not any(map(_alive, workers)),
            timeout=20,
            what=f"worker processes {workers} to stop after their pool was killed",
        )
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
