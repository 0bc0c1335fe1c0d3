"""The dashboard's Output panel in a real headless Chromium shows the text of an agent run as
a task (`pool.agent(definition)`) while the run is still going: agent tasks are streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec.projector import Projector
from tests.apps import streaming
from tests.integration.api.test_dashboard import (  # noqa: F401 (fixtures)
    browser_page,
    ms,
    playwright_api,
    projector,
    pytestmark,
)


@pytest.fixture
def story_pool(redis_conf: str) -> Iterator[ax.Pool]:
    ax.CONF.model_override = "tests.apps.streaming:STORY_MODEL"
    streaming.pool.start()
    try:
        yield streaming.pool
    finally:
        streaming.pool.shutdown()


async def test_the_output_panel_shows_an_agent_tasks_text_as_it_is_written(
    story_pool: ax.Pool,
    db: Engine,
    projector: Projector,  # noqa: F811
    serve: Any,
    browser_page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    seen = tmp_path / "seen"
    task = await ax.enqueue_agent(
        "storyteller", input="Tell me.", context=streaming.StoryContext(seen=str(seen))
    )
    await page.goto(f"{server.url}/#agent/{task.agent_id}")
    output = page.locator("#output")
    # The run waits in its tool until the opening sentence is on the page: it came live.
    await expect(output.locator(".out-text")).to_have_text(streaming.OPENING, timeout=ms(20))
    await expect(output.locator(".out-item").first).to_contain_text("wait_for_reader")
    await expect(page.locator("#d-meta .badge")).not_to_have_text("complete")
    seen.touch()
    await expect(page.locator("#d-meta .badge")).to_have_text("complete", timeout=ms(20))
    texts = await output.locator(".out-text").all_inner_texts()
    assert "".join(texts) == streaming.OPENING + streaming.ANSWER
    await expect(output.locator(".out-start").first).to_contain_text("storyteller")
