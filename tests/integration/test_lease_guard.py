"""The claim guard after a Redis outage (workers/leases.py): when Redis comes back, a worker
claims no expired lease before every live worker has had its longest backoff and a lease
period to renew its own.

Two workers run in this process against a redis-server the test kills and restarts. The
backoff of each one's lease renewal is held by the test instead of drawn at random, so that
the order in which they find Redis back is fixed: the claimer finds it back at once, the
holder of a running task only after its longest backoff (`maximum`), the worst case the
guard allows for. Before the guard counted from the first good renewal after the outage, the
claimer took the task over at once and it ran twice (fault 5 found it by chance); with a guard
of a lease alone (without the longest backoff), it takes it over before the holder renews.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import BaseModel

import agentexec as ax
from agentexec import events
from agentexec.connection import Reconnect, get_redis
from agentexec.consumer import Claim
from agentexec.embedded import EmbeddedRedis
from agentexec.streams import Keys
from agentexec.workers import leases
from agentexec.workers.worker import Worker
from tests.support.waiting import async_wait_for, scaled

pytestmark = pytest.mark.timeout(60)

LEASE = 1.0
"""`lease_seconds` of this test: long enough for a renewal round on a busy machine."""
MAXIMUM = 1.5
"""The longest backoff of the lease renewals (the default, 5 s, would make a slow test).
Longer than a lease, as by default, so that a guard of a lease alone lets the claimer in
before the holder renews."""


class Runs(BaseModel):
    path: str


pool = ax.Pool(num_workers=1, concurrency=2)
_release: dict[str, asyncio.Event] = {}


@pool.task("held_through_outage", max_retries=0)
async def held_through_outage(agent_id: UUID, context: Runs) -> str:
    """Counts its runs in `path`, then runs until the test releases it."""
    with Path(context.path).open("a") as f:
        f.write(f"{agent_id}\n")
    await asyncio.wait_for(_release[context.path].wait(), scaled(60))
    return "done"


class HeldBackoff(Reconnect):
    """A backoff that lasts until the test ends it (`over`), in place of a random one."""

    def __init__(self, what: str) -> None:
        super().__init__(what, initial=MAXIMUM, maximum=MAXIMUM)
        self.over = asyncio.Event()
        self.failures = 0
        self.recovered_at: float | None = None
        """When a step first succeeded after a failure (monotonic)."""

    async def failed(self, error: BaseException) -> None:
        self.failures += 1
        await asyncio.wait_for(self.over.wait(), scaled(60))

    def succeeded(self) -> None:
        if self.failures and self.recovered_at is None:
            self.recovered_at = time.monotonic()
        super().succeeded()


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    """A private redis-server (AOF on: a kill and restart loses nothing) for this test."""
    own = EmbeddedRedis(appendonly=True).start()
    ax.CONF.redis_url = own.url
    try:
        yield own
    finally:
        own.close()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize(
    "claimer_starts",
    [
        pytest.param("before", id="claimer-lived-through-the-outage"),
        # It never saw the outage: only Redis's uptime tells it that leases look expired
        # because Redis was down, not because their holders died.
        pytest.param("after", id="claimer-started-after-redis-came-back"),
    ],
)
async def test_no_live_lease_is_claimed_while_its_holder_is_in_backoff_after_an_outage(
    server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimer_starts: str
) -> None:
    ax.CONF.lease_seconds = LEASE
    runs = tmp_path / "runs"
    _release[str(runs)] = asyncio.Event()

    backoffs: dict[str, HeldBackoff] = {}

    def held_backoff(what: str) -> HeldBackoff:
        return backoffs.setdefault(what, HeldBackoff(what))

    monkeypatch.setattr(leases, "Reconnect", held_backoff)
    holder_backoff = held_backoff("lease renewal of worker holder")
    claimer_backoff = held_backoff("lease renewal of worker claimer")
    holder = Worker(pool.worker_spec("holder"))
    claimer = Worker(pool.worker_spec("claimer"))
    claims: list[tuple[float, Claim]] = []
    claim_expired = claimer.consumer.claim_expired

    async def recorded(stream: str, lease_ms: int, count: int = 10) -> Claim:
        claim = await claim_expired(stream, lease_ms, count)
        claims.append((time.monotonic(), claim))
        return claim

    claimer.consumer.claim_expired = recorded  # type: ignore[method-assign]

    running = [asyncio.create_task(holder.run())]

    async def start_claimer() -> None:
        running.append(asyncio.create_task(claimer.run()))
        await async_wait_for(
            lambda: _true(claimer.serving.is_set()), timeout=10, what="the claimer to serve"
        )

    try:
        task = await ax.enqueue("held_through_outage", Runs(path=str(runs)))
        await async_wait_for(
            lambda: _true(_lines(runs) == 1), timeout=10, what="the holder to start the task"
        )
        if claimer_starts == "before":
            await start_claimer()

        server.kill()
        await async_wait_for(
            lambda: _true(
                holder_backoff.failures > 0
                and (claimer_starts == "after" or claimer_backoff.failures > 0)
            ),
            timeout=10,
            what="the lease renewals to fail",
        )
        # The outage itself, longer than a lease: the task's entry looks expired to Redis.
        await asyncio.sleep(LEASE * 1.5)
        EmbeddedRedis.start(server)
        back = time.monotonic()
        # Idle connections the kill left in the pool the two workers share here fail once
        # each when next used: drop them, so that no renewal or claim is delayed by one.
        await get_redis().connection_pool.disconnect(inuse_connections=False)
        before = len(claims)
        claimer_backoff.over.set()  # the claimer finds Redis back at once
        if claimer_starts == "after":
            await start_claimer()
        # The holder in its longest backoff when Redis came back (the behaviour under test).
        await asyncio.sleep(MAXIMUM)
        holder_backoff.over.set()
        await async_wait_for(
            lambda: _true(holder_backoff.recovered_at is not None),
            timeout=10,
            what="the holder to renew its lease",
        )
        # The guard's window: a lease plus the longest backoff from the claimer's first good
        # renewal. Its end is the claimer's first claim after the outage; the wait is bounded
        # by the window (plus the renewal rounds around it), scaled.
        await async_wait_for(
            lambda: _true(len(claims) > before),
            timeout=LEASE * 2 + MAXIMUM + 5,
            what="the claimer to claim again after the guard's window",
        )
        taken = [(at - back, c.deliveries) for at, c in claims[before:] if c.deliveries]
        assert not taken, f"the claimer took over the live holder's task: {taken}"
        first = claims[before][0] - back
        assert first >= LEASE + MAXIMUM, f"first claim {first:.2f}s after Redis came back"

        _release[str(runs)].set()
        assert await ax.get_result(task, timeout=30) == "done"
        assert _lines(runs) == 1
        log = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
        kinds = [
            type(e).__name__
            for e in (events.decode_entry(f) for _, f in log)
            if e.agent_id == task.agent_id
        ]
        assert kinds.count("TaskStarted") == 1, kinds
        assert kinds.count("TaskCompleted") == 1, kinds
    finally:
        _release[str(runs)].set()
        holder_backoff.over.set()
        claimer_backoff.over.set()
        if server.process is not None and server.process.poll() is not None:
            EmbeddedRedis.start(server)  # the workers hand back what they hold
        holder.stopping.set()
        claimer.stopping.set()
        try:
            await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), scaled(30))
        finally:
            del _release[str(runs)]


async def _true(value: bool) -> bool:
    return value
