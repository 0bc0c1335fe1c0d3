"""`agentexec.runtime`: settings read once at the edge, as `CONF` is when the call happens."""

from __future__ import annotations

import asyncio
import pickle

import agentexec as ax
from agentexec.runtime import Runtime, current, using


def test_current_follows_an_assignment_to_conf() -> None:
    before = current()
    assert current() is before  # no assignment: the same snapshot, not a copy per call
    ax.CONF.max_context_bytes = 4096
    after = current()
    assert after is not before
    assert after.settings.max_context_bytes == 4096
    assert before.settings.max_context_bytes != 4096


def test_a_runtime_is_a_snapshot() -> None:
    runtime = Runtime.from_settings(ax.CONF)
    ax.CONF.key_prefix = "elsewhere"
    assert runtime.settings.key_prefix != "elsewhere"
    assert runtime.keys.prefix == runtime.settings.key_prefix
    assert runtime.broker is runtime.broker
    assert runtime.broker.keys is runtime.keys


def test_using_makes_a_runtime_current_in_its_context_and_its_tasks() -> None:
    ax.CONF.lease_seconds = 7
    pool_runtime = Runtime.from_settings(ax.CONF)
    ax.CONF.lease_seconds = 9

    async def inside() -> float:
        return current().settings.lease_seconds

    async def main() -> list[float]:
        with using(pool_runtime):
            seen = [current().settings.lease_seconds, await asyncio.create_task(inside())]
        return [*seen, current().settings.lease_seconds]

    assert asyncio.run(main()) == [7, 7, 9]


def test_the_settings_a_worker_gets_survive_pickling() -> None:
    ax.CONF.max_context_bytes = 4096
    settings = pickle.loads(pickle.dumps(current().settings))
    assert Runtime.from_settings(settings).settings.max_context_bytes == 4096
