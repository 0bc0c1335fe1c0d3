"""The documented limits of the reads, on SQLite and PostgreSQL: `stats` refuses a bucket under
a second and one that would make more than 10,000 buckets (ValueError; REST 422 and 400), and
`detail` lists a parent's first 1,000 children while counting them all (`children` pages
through every one)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.api import create_app
from agentexec.events import Event, TaskCompleted, TaskQueued
from agentexec.projector import Projector

from .workload import append_all


async def test_stats_refuse_buckets_that_cannot_chart(projector: Projector, engine: Engine) -> None:
    now = datetime.now(UTC)
    old, new = uuid.uuid4(), uuid.uuid4()
    append_all(
        [
            TaskQueued(agent_id=old, task_name="research", queue="q", ts=now - timedelta(days=2)),
            TaskQueued(agent_id=new, task_name="research", queue="q", ts=now),
        ]
    )
    await projector.catch_up()
    with Session(engine) as s:
        with pytest.raises(ValueError, match=r"bucket 0:00:00.500000 is under a second"):
            ax.activity.stats(s, bucket=timedelta(milliseconds=500))
        with pytest.raises(
            ValueError,
            match=r"a bucket of 0:00:01 splits the tasks into 1728\d\d buckets, more than 10000; "
            r"use a bigger bucket or a shorter window",
        ):
            ax.activity.stats(s, bucket=timedelta(seconds=1))
        hourly = ax.activity.stats(s, bucket=timedelta(hours=1))
        recent = ax.activity.stats(s, since=now - timedelta(minutes=1), bucket=timedelta(seconds=1))
    assert len(hourly.buckets) in (49, 50)  # the empty hours between included
    assert [b.overall.total for b in hourly.buckets if b.overall.total] == [1, 1]
    assert [b.overall.total for b in recent.buckets] == [1]

    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        too_many = await client.get("/api/activities/stats", params={"bucket_seconds": 1})
        assert too_many.status_code == 400 and "use a bigger bucket" in too_many.text
        too_small = await client.get("/api/activities/stats", params={"bucket_seconds": 0.5})
        assert too_small.status_code == 422
        hours = await client.get("/api/activities/stats", params={"bucket_seconds": 3600})
        assert hours.status_code == 200 and len(hours.json()["buckets"]) == len(hourly.buckets)


async def test_detail_shows_the_first_thousand_children_and_counts_them_all(
    projector: Projector, engine: Engine
) -> None:
    parent = uuid.uuid4()
    start = datetime.now(UTC) - timedelta(minutes=5)
    kids = [uuid.uuid4() for _ in range(1001)]
    evs: list[Event] = [TaskQueued(agent_id=parent, task_name="fan_out", queue="q", ts=start)]
    evs += [
        TaskQueued(
            agent_id=kid,
            task_name="leaf",
            queue="q",
            parent_id=parent,
            ts=start + timedelta(milliseconds=i + 1),
        )
        for i, kid in enumerate(kids)
    ]
    evs += [TaskCompleted(agent_id=kid, task_name="leaf") for kid in kids[:10]]
    append_all(evs)
    await projector.catch_up()
    counts = {"queued": 991, "running": 0, "complete": 10, "error": 0, "canceled": 0}
    with Session(engine) as s:
        detail = ax.activity.detail(s, parent)
        pages = [ax.activity.children(s, parent, page=p, page_size=100) for p in range(1, 12)]
    assert detail is not None
    assert [c.agent_id for c in detail.children] == kids[:1000]  # oldest first
    assert detail.children_counts == counts
    assert all(p is not None and p.total == 1001 and p.counts == counts for p in pages)
    assert [i.agent_id for p in pages for i in p.items] == kids  # type: ignore[union-attr]
