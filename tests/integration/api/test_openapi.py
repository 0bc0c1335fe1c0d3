"""Schemathesis against the OpenAPI spec: generated requests, valid and invalid, to every REST
route; no 500 and no response outside the documented schemas. The SSE routes are left out
(their streams never end); test_rest.py and test_feeds.py cover their inputs."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.openapi import from_asgi
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import create_app
from tests.integration.api.conftest import project


@pytest.fixture
async def populated(redis_conf: str, db: Engine) -> Engine:
    agent = ax.activity.create("research", "queued")
    ax.activity.update(agent, "halfway", percentage=50)
    ax.activity.complete(ax.activity.create("summarise"))
    await project(db)
    return db


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_rest_routes_conform_to_their_openapi_spec(populated: Engine, mode: GenerationMode) -> None:
    # Schemathesis' pytest loader does not run under pytest 9 yet: drive Hypothesis directly.
    schema = from_asgi("/openapi.json", create_app(populated)).exclude(tag="feeds")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6  # with the stats endpoint

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path.endswith("/count"):
            continue  # no parameters: no invalid request to make

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate()

        conforms()


def test_the_spec_documents_every_route(populated: Engine) -> None:
    spec = create_app(populated).openapi()
    assert set(spec["paths"]) == {
        "/api/activities",
        "/api/activities/active/count",
        "/api/activities/{agent_id}",
        "/api/activities/{agent_id}/status",
        "/api/activities/{agent_id}/children",
        "/api/activities/stats",
        "/api/events",
        "/api/activities/{agent_id}/events",
    }
    feed = spec["paths"]["/api/events"]["get"]
    assert "text/event-stream" in feed["responses"]["200"]["content"]
