"""`import agentexec` imports only what the caller uses (issue 17, start-up speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import agentexec as ax

HEAVY = ("fastapi", "agents", "sqlalchemy.orm")


def _loaded_after(code: str, env: dict[str, str] | None = None) -> dict[str, bool]:
    probe = (
        code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_import_agentexec_loads_no_fastapi_agents_or_orm() -> None:
    assert _loaded_after("import agentexec") == dict.fromkeys(HEAVY, False)


def test_an_enqueue_only_process_loads_no_fastapi_agents_or_orm(redis_conf: str) -> None:
    code = """
import asyncio
from pydantic import BaseModel
import agentexec as ax

class Job(BaseModel):
    n: int

async def main() -> None:
    await ax.enqueue("job", Job(n=1))
    ax.activity.update  # the write side of ax.activity is part of enqueue-only use

asyncio.run(main())
"""
    env = dict(
        os.environ,
        AGENTEXEC_REDIS_URL=redis_conf,
        AGENTEXEC_KEY_PREFIX=ax.CONF.key_prefix,
        AGENTEXEC_PARTITIONS=str(ax.CONF.partitions),
    )
    assert _loaded_after(code, env) == dict.fromkeys(HEAVY, False)


def test_lazy_names_resolve_and_are_listed() -> None:
    for name in ax.__all__:
        assert getattr(ax, name) is not None
    for name in ax.activity.__all__:
        assert getattr(ax.activity, name) is not None
    assert set(ax.__all__) <= set(dir(ax))
    from agentexec.activity.reads import list_activities

    assert ax.activity.list is list_activities
