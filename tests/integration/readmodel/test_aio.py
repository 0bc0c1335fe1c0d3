"""`ax.activity.aio`, the awaitable activity API, against a real pool and projector on SQLite and
PostgreSQL (reached async by psycopg and by asyncpg): an application with only an
`AsyncEngine` (tests/apps/aio_app.py) runs its pool on it, writes with the aio calls and reads
with `AsyncSession`s, and gets what the sync API gives; the same writes made sync and awaited
give the same rows."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Base
from agentexec.api import create_app
from agentexec.cli import main
from agentexec.projector import Projector
from tests.apps import aio_app
from tests.apps.aio_app import Fan, Steps
from tests.integration.readmodel.conftest import (
    POSTGRES_URL,
    PostgresSchema,
    sqlite_engine,
    truncate_tables,
)
from tests.integration.readmodel.workload import append_all, traffic
from tests.support.pools import running_on
from tests.support.waiting import async_wait_for, scaled

STREAM_ID = re.compile(r"\d+-\d+")


class AsyncpgDatabase:
    """A database of its own on the test server, dropped at the end: asyncpg takes no
    `options` in its URL, so the suite's schemas (chosen by a search_path option) cannot
    serve it."""

    def __init__(self) -> None:
        self.name = f"axtest_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.engine = create_engine(make_url(POSTGRES_URL).set(database=self.name))
        Base.metadata.create_all(self.engine)

    def truncate(self) -> None:
        truncate_tables(self.engine)

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="module")
def asyncpg_database() -> Iterator[AsyncpgDatabase]:
    database = AsyncpgDatabase()
    yield database
    database.drop()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("asyncpg", marks=pytest.mark.postgres),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The suite's read model (this module's `engine` replaces the suite's), on SQLite, on
    PostgreSQL reached async by psycopg, and on PostgreSQL reached async by asyncpg."""
    if request.param == "sqlite":
        made = sqlite_engine(tmp_path / "agents.db")
        yield made
        made.dispose()
    elif request.param == "postgresql":
        schema: PostgresSchema = request.getfixturevalue("postgres")
        schema.truncate()
        yield schema.engine
    else:
        database: AsyncpgDatabase = request.getfixturevalue("asyncpg_database")
        database.truncate()
        yield database.engine


def async_url(engine: Engine) -> str:
    """The URL of `engine`'s database through an async driver: aiosqlite for SQLite, psycopg's
    for the suite's PostgreSQL schemas (their URL sets the search path), asyncpg for a
    database of its own."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif "options" in url.query:
        url = url.set(drivername="postgresql+psycopg_async")
    else:
        url = url.set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def async_engine(engine: Engine) -> AsyncIterator[AsyncEngine]:
    made = create_async_engine(async_url(engine))
    yield made
    await made.dispose()


@pytest.fixture
def aio_pool(redis_conf: str, async_engine: AsyncEngine) -> Any:
    """tests/apps/aio_app.py's pool on the test's database (its projector included)."""
    with running_on(aio_app.pool, async_engine) as pool:
        yield pool


def sync_reads(engine: Engine, agent_ids: list[uuid.UUID]) -> dict[str, Any]:
    with Session(engine) as session:
        return {
            "list": ax.activity.list(session, page_size=100),
            "details": [ax.activity.detail(session, a) for a in agent_ids],
            "children": [ax.activity.children(session, a) for a in agent_ids],
            "active": ax.activity.active_count(session),
            "stats": ax.activity.stats(session),
        }


async def test_an_app_with_only_an_async_engine_reads_what_the_sync_api_reads(
    aio_pool: ax.Pool, async_engine: AsyncEngine, engine: Engine
) -> None:
    done = await ax.enqueue("aio_steps", Steps(steps=3))
    gave_up = await ax.enqueue("aio_steps", Steps(steps=2, give_up=True))
    parent = await ax.enqueue("aio_fan", Fan(children=2))
    ids = await ax.get_result(done, timeout=scaled(30))
    with pytest.raises(ax.TaskFailedError, match="gave up after the last step"):
        await ax.get_result(gave_up, timeout=scaled(30))
    kids = [uuid.UUID(k) for k in await ax.get_result(parent, timeout=scaled(30))]
    for kid in kids:
        await ax.get_result(kid, timeout=scaled(30))
    imported = await aio_app.track_import(120)
    failed = await aio_app.track_failed_import()
    # Awaited inside the handler, each update is appended before it returns: its id is known.
    assert len(ids) == 3 and all(STREAM_ID.fullmatch(i) for i in ids)

    everyone = [done.agent_id, gave_up.agent_id, parent.agent_id, *kids, imported, failed]

    async def all_ended() -> bool:
        async with AsyncSession(async_engine) as session:
            listing = await ax.activity.aio.list(session, page_size=100)
            return listing.total == len(everyone) and not await ax.activity.aio.count_active(
                session
            )

    # The pool's own projector (given only the async engine) keeps the read model.
    await async_wait_for(all_ended, timeout=30, what="every activity projected and ended")

    awaited = await aio_app.report(async_engine, everyone)
    assert awaited == sync_reads(engine, everyone)

    details = dict(zip(everyone, awaited["details"], strict=True))
    steps = details[done.agent_id]
    assert steps is not None and steps.status == "complete"
    progress = [(log.message, log.percentage) for log in steps.logs if log.status == "running"]
    assert ("step 1 of 3", 33) in progress and ("step 3 of 3", 100) in progress
    verdict = details[gave_up.agent_id]
    assert verdict is not None and verdict.status == "error"
    assert verdict.error == "gave up after the last step"
    mine = details[imported]
    assert mine is not None and mine.agent_type == "import" and mine.status == "complete"
    assert [log.message for log in mine.logs] == [
        "Importing 120 rows",
        "half way",
        "Imported 120 rows",
    ]
    broken = details[failed]
    assert broken is not None and broken.status == "error" and broken.error == "disk full"
    tree = awaited["children"][everyone.index(parent.agent_id)]
    assert tree is not None and sorted(i.agent_id for i in tree.items) == sorted(kids)
    assert awaited["stats"].overall.total == len(everyone)

    # The API takes the async engine too.
    transport = httpx.ASGITransport(app=create_app(async_engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        listed = (await client.get("/api/activities", params={"page_size": 100})).json()
    assert listed["total"] == len(everyone)
    assert {i["agent_id"] for i in listed["items"]} == {str(a) for a in everyone}


def shape(detail: Any) -> tuple[Any, ...]:
    """What a write decides in a detail: not its agent id, times or event ids."""
    return (
        detail.agent_type,
        detail.status,
        detail.latest_log,
        detail.latest_percentage,
        detail.error,
        [(log.status, log.message, log.percentage) for log in detail.logs],
    )


async def test_awaited_writes_make_the_rows_sync_writes_make(
    projector: Projector, async_engine: AsyncEngine, engine: Engine
) -> None:
    sync_ok = ax.activity.create("import", "Importing")
    ax.activity.update(sync_ok, "half way", percentage=50)
    ax.activity.complete(sync_ok)
    sync_bad = ax.activity.create("import")
    ax.activity.update(sync_bad, "reading")
    ax.activity.error(sync_bad, error="disk full")

    aio = ax.activity.aio
    async_ok = await aio.create("import", "Importing")
    assert STREAM_ID.fullmatch(await aio.update(async_ok, "half way", percentage=50))
    assert STREAM_ID.fullmatch(await aio.complete(async_ok))
    async_bad = await aio.create("import")
    await aio.update(async_bad, "reading")
    await aio.error(async_bad, error="disk full")
    given = uuid.uuid4()
    assert await aio.create("import", agent_id=str(given)) == given
    await projector.catch_up()

    with Session(engine) as session:
        sync_details = [ax.activity.detail(session, a) for a in (sync_ok, sync_bad)]
    async with AsyncSession(async_engine) as session:
        async_details = [await aio.detail(session, a) for a in (async_ok, async_bad)]
    assert [shape(d) for d in async_details] == [shape(d) for d in sync_details]
    assert [shape(d)[1] for d in async_details] == ["complete", "error"]

    # The same refusals, before anything is appended.
    with pytest.raises(ValueError, match="percentage 101"):
        await aio.update(async_ok, "too far", percentage=101)
    with pytest.raises(ValueError, match="message '  ' is empty"):
        await aio.update(async_ok, "  ")
    with pytest.raises(ax.UnknownActivityError, match="is not known"):
        await aio.update(uuid.uuid4(), "never created")


async def test_awaited_writes_take_the_parameters_the_sync_ones_take(
    projector: Projector, async_engine: AsyncEngine, engine: Engine
) -> None:
    """agentexec 0.3.0's `create(metadata=...)` and `update(status=...)`, awaited."""
    aio = ax.activity.aio
    awaited = await aio.create("import", metadata={"customer": "42"})
    await aio.update(awaited, "all rows read", status="COMPLETE")
    plain = ax.activity.create("import", metadata={"customer": "42"})
    ax.activity.update(plain, "all rows read", status="COMPLETE")
    stopped = await aio.create("import")
    await aio.update(stopped, "stopped by the user", status=ax.activity.Status.CANCELED)
    with pytest.raises(ValueError, match="never goes back to QUEUED"):
        await aio.update(stopped, "again", status="queued")
    await projector.catch_up()

    async with AsyncSession(async_engine) as session:
        tagged = await aio.list(session, metadata={"customer": "42"})
        details = [await aio.detail(session, a) for a in (awaited, plain, stopped)]
    with Session(engine) as session:
        assert tagged == ax.activity.list(session, metadata={"customer": "42"})
    assert {i.agent_id for i in tagged.items} == {awaited, plain}
    assert shape(details[0]) == shape(details[1])
    assert [shape(d)[1] for d in details] == ["complete", "complete", "canceled"]


async def test_awaited_cancel_pending_and_prune(
    projector: Projector, async_engine: AsyncEngine, engine: Engine
) -> None:
    aio = ax.activity.aio
    pending = [await aio.create("sync job"), await aio.create("sync job")]
    ended = await aio.create("sync job")
    await aio.complete(ended)
    await projector.catch_up()
    async with AsyncSession(async_engine) as session:
        assert await aio.count_active(session) == 2
        assert await aio.cancel_pending(session) == 2
    await projector.catch_up()
    with Session(engine) as session:
        assert ax.activity.cancel_pending(session) == 0  # nothing left for the sync form
        statuses = [ax.activity.detail(session, a) for a in pending]
    assert [d.status if d else None for d in statuses] == ["canceled", "canceled"]

    async with AsyncSession(async_engine) as session:
        assert await aio.prune(session, timedelta(0)) == 3
        assert (await aio.list(session)).total == 0


async def test_an_aio_read_given_a_sync_session_names_the_fix(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(TypeError, match=r"aio\.list takes an AsyncSession.*ax\.activity\.list"):
            await ax.activity.aio.list(session)  # type: ignore[arg-type]


async def test_the_commands_and_the_api_take_an_async_database_url(
    projector: Projector, engine: Engine
) -> None:
    done = await ax.activity.aio.create("import")
    await ax.activity.aio.complete(done, "Imported")
    await projector.catch_up()
    url = async_url(engine)
    runner = CliRunner()

    stats = runner.invoke(main, ["stats", "--database-url", url, "--all-time", "--json"])
    assert stats.exit_code == 0, stats.output
    assert '"total": 1' in stats.output
    args = ["replay", "--database-url", url, "--agent-id", str(done), "--json"]
    replayed = runner.invoke(main, args)
    assert replayed.exit_code == 0, replayed.output
    assert len(replayed.output.splitlines()) == 2  # queued, completed

    transport = httpx.ASGITransport(app=create_app(database_url=url))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        answer = await client.get(f"/api/activities/{done}")
    assert answer.status_code == 200 and answer.json()["status"] == "complete"

    pruned = runner.invoke(main, ["prune", "--older-than", "0s", "--database-url", url])
    assert pruned.exit_code == 0, pruned.output
    assert "removed 1 ended activities" in pruned.output


async def test_every_read_and_filter_awaited_equals_sync(
    projector: Projector, async_engine: AsyncEngine, engine: Engine
) -> None:
    """Each async driver binds the filters' values (naive and aware times, JSON metadata,
    cursors) as the sync one does."""
    append_all(traffic(200))
    parent = await ax.activity.aio.create("parent", metadata={"org": "acme", "n": 3, "ok": True})
    await projector.catch_up()
    now = datetime.now(UTC)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("list", {"page_size": 7}),
        ("list", {"page": 2, "page_size": 5, "status": ["complete", "error"]}),
        ("list", {"since": now - timedelta(hours=1), "until": now + timedelta(hours=1)}),
        ("list", {"since": (now - timedelta(hours=1)).replace(tzinfo=None)}),
        ("list", {"task_name": "research", "retried": False}),
        ("list", {"running_longer_than": timedelta(seconds=0)}),
        ("list", {"metadata": {"org": "acme", "n": 3, "ok": True}}),
        ("list", {"parent_id": parent}),
        ("stats", {}),
        ("stats", {"since": now - timedelta(days=1), "bucket": timedelta(minutes=5)}),
        ("stats", {"task_name": ["research"], "metadata": {"org": "acme"}}),
    ]
    for name, kwargs in calls:
        async with AsyncSession(async_engine) as session:
            awaited = await getattr(ax.activity.aio, name)(session, **kwargs)
        with Session(engine) as session:
            assert awaited == getattr(ax.activity, name)(session, **kwargs), (name, kwargs)
    async with AsyncSession(async_engine) as session:
        first = await ax.activity.aio.list(session, page_size=3)
        second = await ax.activity.aio.list(session, page_size=3, cursor=first.next_cursor)
    with Session(engine) as session:
        assert second == ax.activity.list(session, page_size=3, cursor=first.next_cursor)


async def test_the_projector_command_takes_an_async_url(redis_conf: str, tmp_path: Path) -> None:
    """`agentexec projector` given the application's own async URL creates the tables and
    projects, through the URL's sync twin."""
    from .test_projector_start import AGENTEXEC, cli_env

    url = f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    process = await asyncio.create_subprocess_exec(
        AGENTEXEC, "projector", "--database-url", url, "--create-tables", env=cli_env(redis_conf)
    )
    async_engine = create_async_engine(url)
    try:
        agent_id = await ax.activity.aio.create("import", "Importing")

        async def projected() -> bool:
            try:
                async with AsyncSession(async_engine) as session:
                    return await ax.activity.aio.detail(session, agent_id) is not None
            except Exception:  # the tables appear when the projector has started
                return False

        await async_wait_for(projected, timeout=60, what="the activity projected")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(process.wait(), scaled(60)) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await async_engine.dispose()
