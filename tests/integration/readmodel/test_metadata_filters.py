"""Metadata filters of `list` and `stats` (and REST) select the same rows on SQLite and
PostgreSQL, by the value's type as docs/activity.md says, and a row whose value has another
type never fails the query (PostgreSQL used to cast every row's text: a float where an int
was asked for raised DataError)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.api import create_app
from agentexec.events import TaskQueued
from agentexec.projector import Projector

from .workload import append_all

ROWS = [
    {"n": 1, "flag": True, "x": 1.5, "s": "1"},
    {"n": "1", "flag": "true", "x": 2, "s": 1},
    {"n": 2, "flag": False, "x": "high"},
]

# filter -> the rows it selects
PYTHON = [
    ({"n": 1}, [0]),
    ({"n": "1"}, [0, 1]),  # a str compares as text, as REST does
    ({"flag": True}, [0]),
    ({"flag": False}, [2]),
    ({"flag": "true"}, [0, 1]),
    ({"x": 1.5}, [0]),
    ({"x": 2}, [1]),
    ({"x": 2.0}, [1]),
    ({"x": "high"}, [2]),
    ({"s": 1}, [1]),
    ({"n": 1, "flag": True}, [0]),
    ({"missing": 1}, []),
]
REST = [("n=1", [0, 1]), ("flag=true", [0, 1]), ("x=2", [1]), ("x=high", [2]), ("s=1", [0, 1])]


@pytest.fixture
async def rows(projector: Projector) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in ROWS]
    append_all(
        [
            TaskQueued(agent_id=agent, task_name="t", queue="q", metadata=meta)
            for agent, meta in zip(ids, ROWS, strict=True)
        ]
    )
    await projector.catch_up()
    return ids


async def test_metadata_filters_select_by_type(rows: list[uuid.UUID], engine: Engine) -> None:
    with Session(engine) as s:
        for metadata, expected in PYTHON:
            listed = ax.activity.list(s, metadata=metadata)
            got = sorted(rows.index(i.agent_id) for i in listed.items)
            assert (got, listed.total) == (expected, len(expected)), metadata
            assert ax.activity.stats(s, metadata=metadata).overall.total == len(expected)

    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for query, expected in REST:
            listed = (await client.get("/api/activities", params={"metadata": query})).json()
            got = sorted(rows.index(uuid.UUID(i["agent_id"])) for i in listed["items"])
            assert got == expected, query
            stats = await client.get("/api/activities/stats", params={"metadata": query})
            assert stats.json()["overall"]["total"] == len(expected), query
