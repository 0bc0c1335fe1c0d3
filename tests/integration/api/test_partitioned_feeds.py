"""SSE feeds over a log of three partitions (AGENTEXEC_PARTITIONS=3, issue 14): the feed of
every event merges the partitions (each partition's events once, in its order; across them by
entry time) under cursor ids, one position per partition, that resume with no gap and no
duplicate; a task's feed reads its partition only. On a single redis-server here; the cluster
module imports these tests."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import feed_token
from agentexec.api.cursors import Cursor
from agentexec.api.history import History
from agentexec.api.hub import Hub, Resync
from agentexec.connection import get_sync_redis
from agentexec.eventlog import Recorded
from agentexec.partitions import Partitions
from agentexec.positions import Position
from agentexec.projector import Projector
from agentexec.projector.archive import Archive
from tests.support.sse import Message, open_stream
from tests.support.topology import single_log_only
from tests.support.waiting import async_wait_for, scaled

P = 3
SECRET = "a-feed-secret-of-at-least-32-bytes!"


@pytest.fixture(autouse=True)
def three_partitions(redis_conf: str) -> None:
    ax.CONF.partitions = P


def partitions() -> Partitions:
    return Partitions(ax.CONF.key_prefix, P)


def log_key(partition: int) -> str:
    return partitions().keys(partition).events


def create_in(partition: int, task: str = "research", tenant: str | None = None) -> uuid.UUID:
    """A new activity whose events are in `partition`."""
    return ax.activity.create(
        task, "queued", agent_id=partitions().new_id(partition), tenant=tenant
    )


def append_in(partition: int, count: int, task: str = "research") -> tuple[uuid.UUID, list[str]]:
    """An activity of `partition` with `count` events; returns its stream ids."""
    agent = create_in(partition, task)
    ids = [get_sync_redis().xrevrange(log_key(partition), count=1)[0][0].decode()]
    ids += [ax.activity.update(agent, f"step {i}") for i in range(1, count)]
    return agent, ids


def where(message: Message) -> tuple[int, str]:
    """The partition and the stream id of a message's event."""
    return partitions().of(message.json["agent_id"]), message.json["id"]


def assert_merged(messages: list[Message]) -> None:
    """Each frame's id is the cursor up to its event: its partition at its stream id, the
    others where the feed was; never moving back."""
    cursors = [Cursor.parse(m.id or "", P) for m in messages]
    for message, cursor in zip(messages, cursors, strict=True):
        partition, entry = where(message)
        assert cursor[partition] == Position.parse(entry)
    for before, after in itertools.pairwise(cursors):
        assert all(a >= b for a, b in zip(after, before, strict=True))


async def test_the_global_feed_merges_every_partition_once_each(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    histories = {p: append_in(p, 3)[1] for p in range(P)}
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
        received = await feed.take(3 * P)
        assert sorted(map(where, received)) == sorted(
            (p, i) for p, ids in histories.items() for i in ids
        )
        for p, ids in histories.items():  # each partition's in its log order
            assert [i for q, i in map(where, received) if q == p] == ids
        entry_ms = [Position.parse(where(m)[1]).ms for m in received]
        assert entry_ms == sorted(entry_ms)  # across partitions by entry time
        assert_merged(received)
        last = Cursor(tuple(Position.parse(ids[-1]) for ids in histories.values()))
        assert received[-1].id == str(last)
        # Live: from each partition, with cursor ids going on from the history's.
        live = [append_in(p, 1)[1][0] for p in (2, 0, 1)]
        more = await feed.take(3)
    assert sorted(map(where, more)) == sorted(zip((2, 0, 1), live, strict=True))
    assert_merged(received + more)


async def test_resuming_mid_stream_while_every_partition_grows_loses_and_repeats_nothing(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agents = [append_in(p, 20)[0] for p in range(P)]
    stop = asyncio.Event()
    appended = 3 * 20

    async def writer() -> None:
        nonlocal appended
        while not stop.is_set():
            for agent in agents:
                await asyncio.to_thread(ax.activity.update, agent, "racing")
                appended += 1

    task = asyncio.create_task(writer())
    received: list[Message] = []
    try:
        url = f"{server.url}/api/events?last_event_id=0"
        async with open_stream(http, url) as feed:
            received += await feed.take(40)  # mid-history
        async with open_stream(http, url, {"Last-Event-ID": received[-1].id or ""}) as feed:
            received += await feed.take(80)  # the rest of the history, then live
        async with open_stream(http, url, {"Last-Event-ID": received[-1].id or ""}) as feed:
            received += await feed.take(20)
            stop.set()
            await task
            received += await feed.take(appended - len(received))
    finally:
        stop.set()
        await task
    places = list(map(where, received))
    assert len(set(places)) == len(places) == appended
    for p in range(P):
        logged = [i.decode() for i, _ in get_sync_redis().xrange(log_key(p))]
        assert [i for q, i in places if q == p] == logged
    assert_merged(received)


def blocked_reads(clients: list[Any]) -> int:
    """How many connections of `clients`' servers wait in a blocking XREAD."""
    return sum(
        1
        for client in clients
        for info in client.client_list()
        if info["cmd"] == "xread" and "b" in info["flags"]
    )


async def test_the_hub_waits_on_every_partition_with_one_read(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    async with open_stream(http, f"{server.url}/api/events") as feed:
        append_in(1, 1)
        await feed.take(1)

        async def one_read() -> bool:
            return blocked_reads([get_sync_redis()]) == 1

        await async_wait_for(one_read, what="one blocking XREAD over the 3 logs")


async def test_a_task_feed_reads_only_its_partition_and_its_events(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent, ids = append_in(1, 3)
    neighbour, _ = append_in(1, 2, task="noise")
    append_in(0, 2, task="noise")
    url = f"{server.url}/api/activities/{agent}/events"
    async with open_stream(http, url) as feed:
        first = await feed.take(3)
        assert [m.id for m in first] == ids  # a task's feed: stream ids of its partition
        append_in(2, 1, task="noise")
        ax.activity.update(neighbour, "noise")
        ids.append(ax.activity.complete(agent))
        assert [m.id for m in await feed.rest()] == ids[3:]
    # Resuming after a stream id, or after a cursor of the global feed.
    async with open_stream(http, url, {"Last-Event-ID": ids[0]}) as feed:
        assert [m.id for m in await feed.rest()] == ids[1:]
    cursor = str(Cursor.origin(P).moved(1, Position.parse(ids[1])))
    async with open_stream(http, url, {"Last-Event-ID": cursor}) as feed:
        assert [m.id for m in await feed.rest()] == ids[2:]


async def test_ids_of_another_partition_count_are_refused_naming_the_fix(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent, _ = append_in(0, 1)
    for path in ("/api/events", f"/api/activities/{agent}/events"):
        for bad in ("1-0_2-0", "1_2_3_4"):
            response = await http.get(f"{server.url}{path}", headers={"Last-Event-ID": bad})
            assert response.status_code == 422, response.text
            assert repr(bad) in response.text and "3 partitions" in response.text
    response = await http.get(f"{server.url}/api/events?last_event_id=17-3")
    assert response.status_code == 422
    assert "'17-3' has 1 position, but this log has 3 partitions" in response.text
    response = await http.get(f"{server.url}/api/events?last_event_id=1_x_3")
    assert response.status_code == 422
    assert "'1_x_3' is not an event id" in response.text


async def test_a_tenants_feed_by_token_merges_its_events_of_every_partition(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db, feed_secret=SECRET)
    mine = [create_in(p, tenant="acme") for p in (2, 0, 1)]
    create_in(1, tenant="globex")
    create_in(0)
    token = feed_token(SECRET, tenant="acme")
    url = f"{server.url}/api/events?feed_token={token}"
    async with open_stream(http, f"{url}&last_event_id=0") as feed:
        received = await feed.take(3)
        assert sorted(m.json["agent_id"] for m in received) == sorted(map(str, mine))
        ax.activity.update(create_in(2, tenant="globex"), "not acme")
        ax.activity.update(mine[0], "acme again")
        received += await feed.take(1)
    assert received[-1].json["message"] == "acme again"
    assert_merged(received)
    # Resumed after its last id: the tenant's next event, and none before it.
    async with open_stream(http, url, {"Last-Event-ID": received[2].id or ""}) as feed:
        assert [m.json["message"] for m in await feed.take(1)] == ["acme again"]


async def test_a_partition_trimmed_past_a_cursor_gets_a_reset_of_that_partition(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    histories = {p: append_in(p, 4)[1] for p in range(P)}
    # Partition 1 loses its first three events, none archived: gone for good.
    get_sync_redis().xtrim(log_key(1), minid=histories[1][3], approximate=False)
    before = Cursor(tuple(Position.parse(histories[p][0]) for p in range(P)))
    async with open_stream(
        http, f"{server.url}/api/events", {"Last-Event-ID": str(before)}
    ) as feed:
        received = await feed.take(3 + 1 + 1 + 3)  # the reset and one event of partition 1
    resets = [m for m in received if m.event == "reset"]
    assert len(resets) == 1
    reset = resets[0]
    resumed = Position.parse(histories[1][3]).before()
    assert reset.json["resume_from"] == reset.id
    assert Cursor.parse(reset.id or "", P)[1] == resumed
    assert Cursor.parse(reset.json["last_event_id"], P)[1] == Position.parse(histories[1][0])
    assert "partition 1" in reset.json["message"]
    events = [where(m) for m in received if m.event != "reset"]
    assert sorted(events) == sorted(
        (p, i) for p, ids in histories.items() for i in (ids[1:] if p != 1 else ids[3:])
    )
    # Reconnecting after the reset: no second one, and nothing again.
    async with open_stream(
        http, f"{server.url}/api/events", {"Last-Event-ID": reset.id or ""}
    ) as feed:
        later = [where(m) for m in received[received.index(reset) + 1 :] if m.event != "reset"]
        assert [where(m) for m in await feed.take(len(later))] == later


async def test_the_read_models_position_is_a_cursor_to_resume_from(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    ids = [append_in(p, 1)[1][0] for p in range(P)]
    response = await http.get(f"{server.url}/api/activities")
    position = response.headers["Agentexec-Position"]
    assert position == "0_0_0"  # nothing projected yet
    async with open_stream(http, f"{server.url}/api/events?last_event_id={position}") as feed:
        assert sorted(map(where, await feed.take(P))) == list(enumerate(ids))


def archive_in(engine: Engine, partition: int, through: str) -> None:
    """Archive `partition`'s log up to `through`, then trim it there, as its projector does."""
    client = get_sync_redis()
    entries = client.xrange(log_key(partition), "-", through)
    Archive(engine, partition=partition).insert([Recorded.from_entry(i, f) for i, f in entries])
    client.xtrim(log_key(partition), minid=through, approximate=False)


async def test_a_trimmed_partition_resumes_from_its_archive(
    engine: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(engine)
    histories = {p: append_in(p, 6) for p in range(P)}
    agent, ids = histories[1]
    # Partition 1's first five are archived and trimmed from Redis; ids[4] stays in both.
    archive_in(engine, 1, ids[4])
    assert get_sync_redis().xlen(log_key(1)) == 2
    after = Cursor(tuple(Position.parse(histories[p][1][1]) for p in range(P)))
    expected = sorted((p, i) for p in range(P) for i in histories[p][1][2:])
    url = f"{server.url}/api/events"
    async with open_stream(http, url, {"Last-Event-ID": str(after)}) as feed:
        received = await feed.take(len(expected))
        assert sorted(map(where, received)) == expected
        assert [i for p, i in map(where, received) if p == 1] == ids[2:]
        assert_merged(received)
        ids.append(ax.activity.update(agent, "live"))
        assert [where(m) for m in await feed.take(1)] == [(1, ids[-1])]
    # Reconnecting in the middle of the archived part, and from the beginning.
    async with open_stream(http, url, {"Last-Event-ID": received[3].id or ""}) as feed:
        assert [m.json["id"] for m in await feed.take(len(received) - 4)] == [
            m.json["id"] for m in received[4:]
        ]
    async with open_stream(http, f"{url}?last_event_id=0") as feed:
        assert len({where(m) for m in await feed.take(3 * 6 + 1)}) == 3 * 6 + 1
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        assert [m.id for m in await feed.take(len(ids))] == ids


@single_log_only(
    "it fails the single server client's XREAD (redis.asyncio.Redis); a cluster's hub reads "
    "each partition with the cluster client (test_redis_cluster_partitioned_feeds.py)"
)
async def test_after_an_outage_the_hub_reads_on_and_resyncs_for_a_partitions_deleted_events(
    redis_conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ax.CONF.block_ms = 50
    down = asyncio.Event()
    failed = 0
    original = redis.asyncio.Redis.xread

    async def xread(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if down.is_set():
            failed += 1
            raise redis.ConnectionError("Redis is down (test)")
        return await original(*args, **kwargs)

    monkeypatch.setattr(redis.asyncio.Redis, "xread", xread)
    hub = Hub(History(partitions(), None))
    try:
        subscription = await hub.subscribe()
        agent, _ = append_in(2, 1)
        [first] = await asyncio.wait_for(subscription.take(), scaled(10))
        assert (first.partition, first.event.agent_id) == (2, agent)
        down.set()

        async def failing() -> bool:
            return failed >= 2

        await async_wait_for(failing, what="the hub's reads to fail")
        # While the hub is away, an event of partition 2 it never read is deleted.
        lost = ax.activity.update(agent, "lost")
        kept = ax.activity.update(agent, "kept")
        get_sync_redis().xdel(log_key(2), lost)
        _, [other] = append_in(0, 1)
        down.clear()
        with pytest.raises(Resync):
            await asyncio.wait_for(subscription.take(), scaled(10))
        rest = await asyncio.wait_for(subscription.take(), scaled(10))
        while len(rest) < 2:
            rest += await asyncio.wait_for(subscription.take(), scaled(10))
        assert {(d.partition, str(d.position)) for d in rest} == {
            (2, kept),
            (0, other),
        }
        assert hub.position is not None and str(hub.position[2]) == kept
    finally:
        await hub.close()


async def test_after_the_projector_trimmed_every_partition_feeds_resume_from_the_archive(
    engine: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    ax.CONF.log_hot_window = 0
    server = await serve(engine)
    histories = {p: append_in(p, 4) for p in range(P)}
    assert await Projector(engine, lease_seconds=5).catch_up() == 3 * 4
    for p, (_, ids) in histories.items():  # trimmed up to each partition's checkpoint
        assert [i.decode() for i, _ in get_sync_redis().xrange(log_key(p))] == ids[-1:]
    # The read model's position: each partition's checkpoint, a cursor to follow it from.
    response = await http.get(f"{server.url}/api/activities")
    checkpoint = Cursor(tuple(Position.parse(histories[p][1][-1]) for p in range(P)))
    assert response.headers["Agentexec-Position"] == str(checkpoint)
    agent, ids = histories[2]
    url = f"{server.url}/api/events"
    async with open_stream(http, url, {"Last-Event-ID": str(checkpoint)}) as feed:
        ids.append(ax.activity.update(agent, "after the list"))
        assert [where(m) for m in await feed.take(1)] == [(2, ids[-1])]
    async with open_stream(http, f"{url}?last_event_id=0") as feed:
        received = await feed.take(3 * 4 + 1)
    assert sorted(map(where, received)) == sorted(
        (p, i) for p, (_, ids) in histories.items() for i in ids
    )
    assert_merged(received)
    # Resumed from the middle of what only the archive holds now.
    async with open_stream(http, url, {"Last-Event-ID": received[4].id or ""}) as feed:
        assert [m.id for m in await feed.take(len(received) - 5)] == [m.id for m in received[5:]]
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        assert [m.id for m in await feed.take(len(ids))] == ids
