"""Feed tokens against a real uvicorn, Redis and worker processes: an API guarded by a bearer
token and by an `authorize` that refuses everyone serves a browser's feed opened with a token
the application signed, and only what the token names: a tenant's token shows that tenant's
events (its tasks' agent events and children included) and never another tenant's; a task's
token only that task's feed. Expired, forged and tampered tokens get 401 saying why, a token
for another scope 403, and REST routes never take one."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import HTTPException
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import feed_token
from tests.apps.basic import Echo, Spawn
from tests.support.sse import Message, open_stream
from tests.support.waiting import scaled

SECRET = "a-feed-secret-of-at-least-32-bytes!"
API_TOKEN = "the-api-bearer-token"


def nobody() -> None:
    """The application's own guard: no request passes it (a browser has no session here)."""
    raise HTTPException(403, "the application's guard refuses this request")


async def guarded(serve: Any, db: Engine, **options: Any) -> Any:
    return await serve(db, token=API_TOKEN, authorize=nobody, feed_secret=SECRET, **options)


def terminal(message: Message) -> bool:
    return message.event in ("task.completed", "task.failed", "task.canceled")


async def test_a_tenants_feed_shows_its_events_and_never_another_tenants(
    running_pool: ax.Pool, db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await guarded(serve, db)
    acme = feed_token(SECRET, tenant="acme")
    globex = feed_token(SECRET, tenant="globex")
    async with (
        open_stream(http, f"{server.url}/api/events?feed_token={acme}") as acme_feed,
        open_stream(http, f"{server.url}/api/events?feed_token={globex}") as globex_feed,
    ):
        tasks = {
            tenant: [
                await ax.enqueue("agent_writes", Echo(text=tenant), tenant=tenant),
                await ax.enqueue("spawn", Spawn(children=2), tenant=tenant),
            ]
            for tenant in ("acme", "globex")
        }
        plain = await ax.enqueue("agent_writes", Echo(text="no tenant"))
        children: dict[str, list[uuid.UUID]] = {}
        for tenant, (writes, spawn) in tasks.items():
            await ax.get_result(writes, timeout=scaled(30))
            children[tenant] = [
                uuid.UUID(i) for i in await ax.get_result(spawn, timeout=scaled(30))
            ]
            for child in children[tenant]:
                await ax.get_result(child, timeout=scaled(30))
        await ax.get_result(plain, timeout=scaled(30))
        # Everything above has ended: an event each feed gets after them closes the check.
        ends = {t: ax.activity.create("end marker", tenant=t) for t in ("acme", "globex")}
        seen: dict[str, list[Message]] = {}
        for tenant, feed in (("acme", acme_feed), ("globex", globex_feed)):
            seen[tenant] = await feed.until(
                lambda m, t=tenant: m.json.get("agent_id") == str(ends[t]), timeout=30
            )
    for tenant, messages in seen.items():
        assert {m.json.get("tenant") for m in messages} == {tenant}
        agents = {uuid.UUID(m.json["agent_id"]) for m in messages}
        writes, spawn = tasks[tenant]
        assert agents == {writes.agent_id, spawn.agent_id, *children[tenant], ends[tenant]}
        of_writes = [m.event for m in messages if m.json["agent_id"] == str(writes.agent_id)]
        assert {"task.queued", "task.started", "agent.turn", "agent.tool_call"} <= set(of_writes)
        assert {"agent.handoff", "agent.usage", "task.progress", "task.completed"} <= set(of_writes)
        for child in children[tenant]:
            ended = [m for m in messages if m.json["agent_id"] == str(child) and terminal(m)]
            assert len(ended) == 1


async def test_a_tenants_token_is_refused_any_other_scope(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await guarded(serve, db)
    acme = feed_token(SECRET, tenant="acme")
    agent = ax.activity.create("research", tenant="acme")
    events = f"{server.url}/api/events"

    async def status(url: str, **params: str) -> tuple[int, str]:
        response = await http.get(url, params=params)
        return response.status_code, response.json()["detail"]

    # Without a token, the app's guards stand: the bearer token, then its own.
    assert (await status(events))[0] == 401
    refused = await http.get(events, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert refused.status_code == 403
    code, detail = await status(events, feed_token=acme, tenant="globex")
    assert code == 403 and "'acme', not tenant 'globex'" in detail
    code, detail = await status(f"{server.url}/api/activities/{agent}/events", feed_token=acme)
    assert code == 403 and "tenant 'acme': open /api/events" in detail
    # REST routes never take a feed token.
    for path in ("/api/activities", f"/api/activities/{agent}", "/api/activities/stats"):
        code, detail = await status(f"{server.url}{path}", feed_token=acme)
        assert code == 401 and "needs its token" in detail, path
    expired = feed_token(SECRET, tenant="acme", expires_in=5, now=1_000_000)
    code, detail = await status(events, feed_token=expired)
    assert code == 401 and "expired" in detail
    forged = feed_token("another-secret-that-is-32-bytes-long", tenant="acme")
    code, detail = await status(events, feed_token=forged)
    assert code == 401 and "signature does not match" in detail
    version, body, signature = acme.split(".")
    code, detail = await status(events, feed_token=f"{version}.{body}x.{signature}")
    assert code == 401 and "signature does not match" in detail
    code, detail = await status(events, feed_token="not a token")
    assert code == 401 and "not one agentexec.api.feed_token issued" in detail
    # The tenant's own feed opens (with ?tenant= naming it or not).
    async with open_stream(http, f"{events}?feed_token={acme}&tenant=acme&last_event_id=0") as feed:
        first = await feed.next()
    assert first.json["agent_id"] == str(agent) and first.json["tenant"] == "acme"


async def test_a_tasks_token_opens_only_its_feed(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await guarded(serve, db)
    agent = ax.activity.create("research", tenant="acme")
    other = ax.activity.create("research", tenant="acme")
    token = feed_token(SECRET, agent_id=agent, expires_in=60)
    url = f"{server.url}/api/activities/{agent}/events?feed_token={token}"
    async with open_stream(http, url) as feed:
        ax.activity.update(other, "someone else's progress", percentage=10)
        ax.activity.update(agent, "working", percentage=50)
        ax.activity.complete(agent)
        messages = await feed.rest()
    assert [m.event for m in messages] == ["task.queued", "task.progress", "task.completed"]
    assert {m.json["agent_id"] for m in messages} == {str(agent)}
    response = await http.get(f"{server.url}/api/activities/{other}/events?feed_token={token}")
    assert response.status_code == 403 and f"for task {agent}" in response.json()["detail"]
    response = await http.get(f"{server.url}/api/events?feed_token={token}")
    assert response.status_code == 403 and f"/api/activities/{agent}/events" in response.text


async def test_an_api_without_a_feed_secret_takes_no_feed_token(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db, token=API_TOKEN)
    token = feed_token(SECRET, tenant="acme")
    response = await http.get(f"{server.url}/api/events?feed_token={token}")
    assert response.status_code == 401 and "needs its token" in response.json()["detail"]
