"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): a
task enqueued from the test appears, its progress bar reaches 100 % without a reload, its
detail view shows its log, and the page keeps up across a restart of the API server.

Set AGENTEXEC_SCREENSHOT=docs/dashboard.png to save a screenshot of the list, and
AGENTEXEC_CHARTS_SCREENSHOT=docs/dashboard-charts.png one of the charts and a task's tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec.projector import Projector
from tests.apps import basic, streaming
from tests.support.waiting import async_wait_for, scaled

CHROMIUM = os.environ.get("AGENTEXEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (CI's .ci/run does)",
)


def ms(seconds: float) -> float:
    """A Playwright timeout (milliseconds) for a deadline of `seconds` on a quiet machine."""
    return scaled(seconds) * 1000


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1180, "height": 640},
        )
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(ms(30))
        try:
            yield page
        finally:
            await context.close()


@pytest.fixture
async def projector(db: Engine) -> AsyncIterator[Projector]:
    projector = Projector(db, lease_seconds=5)
    projector.start()
    yield projector
    await projector.stop(drain=1)


async def test_dashboard_lists_a_task_live_and_shows_its_log(
    running_pool: ax.Pool,
    db: Engine,
    projector: Projector,
    serve: Any,
    browser_page: Any,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    await page.goto(server.url + "/")
    await expect(page.locator("#conn")).to_have_text("live", timeout=ms(5))

    task = await ax.enqueue("progress", basic.Echo(text="shown", delay=0.2))
    row = page.locator(f'tr[data-agent-id="{task.agent_id}"]')
    await expect(row).to_be_visible(timeout=ms(15))
    await expect(row.locator('[role="progressbar"]')).to_have_attribute(
        "aria-valuenow", "100", timeout=ms(20)
    )
    await expect(row.locator(".badge")).to_have_text("complete", timeout=ms(5))
    await expect(row).to_contain_text("progress", timeout=ms(5))

    # The page keeps up across a network drop: the API restarts, a task runs meanwhile.
    port = server.port
    await server.stop()
    await expect(page.locator("#conn")).not_to_have_text("live", timeout=ms(10))
    failing = await ax.enqueue("boom", basic.Echo(text="while the API was down"))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(failing, timeout=scaled(15))
    await serve(db, port=port)
    failed_row = page.locator(f'tr[data-agent-id="{failing.agent_id}"]')
    await expect(failed_row.locator(".badge")).to_have_text("error", timeout=ms(15))
    await expect(page.locator("#conn")).to_have_text("live", timeout=ms(5))

    if os.environ.get("AGENTEXEC_SCREENSHOT"):
        await screenshot(page, Path(os.environ["AGENTEXEC_SCREENSHOT"]))

    await row.click()
    timeline = page.locator("#timeline li")
    await expect(timeline.filter(has_text="step 75")).to_be_visible(timeout=ms(10))
    await expect(timeline.filter(has_text="Task completed successfully.")).to_be_visible(
        timeout=ms(5)
    )
    entries = await timeline.locator(".type").all_inner_texts()
    assert entries == [
        "task.queued",
        "task.started",
        "task.progress",
        "task.progress",
        "task.progress",
        "task.completed",
    ]
    await expect(page.locator("#d-meta .badge")).to_have_text("complete", timeout=ms(5))

    await page.locator("#back").click()
    await expect(row).to_be_visible(timeout=ms(5))


@pytest.fixture
def streaming_pool(redis_conf: str) -> Iterator[ax.Pool]:
    streaming.pool.start()
    try:
        yield streaming.pool
    finally:
        streaming.pool.shutdown()


async def test_the_detail_view_shows_a_runs_text_as_it_is_written(
    streaming_pool: ax.Pool,
    db: Engine,
    projector: Projector,
    serve: Any,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    seen = tmp_path / "seen"
    task = await ax.enqueue("stream_story", streaming.Story(seen=str(seen)), queue_name="streaming")
    await page.goto(f"{server.url}/#agent/{task.agent_id}")
    output = page.locator("#output")
    # The run waits in its tool until the test saw its opening sentence: on the page while
    # the task still runs.
    await expect(output.locator(".out-text")).to_have_text(streaming.OPENING, timeout=ms(20))
    await expect(output.locator(".out-item").first).to_contain_text("wait_for_reader")
    await expect(page.locator("#d-meta .badge")).not_to_have_text("complete")
    seen.touch()
    await expect(page.locator("#d-meta .badge")).to_have_text("complete", timeout=ms(20))
    texts = await output.locator(".out-text").all_inner_texts()
    assert "".join(texts) == streaming.OPENING + streaming.ANSWER
    await expect(output.locator(".out-answer")).to_have_text(streaming.ANSWER)
    await expect(output.locator(".out-start").first).to_contain_text("Storyteller")
    # Deltas stay out of the timeline; the saved turn is in it.
    types = await page.locator("#timeline li .type").all_inner_texts()
    assert "agent.delta" not in types and "agent.checkpoint" in types


async def screenshot(page: Any, path: Path) -> None:
    """The list with a few more tasks, some still running."""
    quick = [
        await ax.enqueue("progress", basic.Echo(text="more", delay=delay)) for delay in (0.05, 0.1)
    ]
    for delay in (1.5, 3.0):
        await ax.enqueue("progress", basic.Echo(text="more", delay=delay))
    quick.append(await ax.enqueue("echo", basic.Echo(text="hello")))
    await page.locator("tr[data-status=running]").first.wait_for(timeout=ms(10))
    # The quick ones finished, the others still run: a varied picture.
    for task in quick:
        row = page.locator(f'tr[data-agent-id="{task.agent_id}"]')
        await playwright_api.expect(row.locator(".badge")).to_have_text("complete", timeout=ms(10))
    await page.screenshot(path=str(path))


async def test_the_page_runs_under_its_csp_and_signs_in_with_the_token(
    db: Engine, serve: Any, browser_page: Any
) -> None:
    page = browser_page
    expect = playwright_api.expect
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    token = "a-dashboard-token-for-the-test"
    server = await serve(db, token=token)

    response = await page.goto(server.url + "/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    await expect(page.locator("#conn")).to_have_text("offline", timeout=10_000)  # 401

    await page.goto(f"{server.url}/?token={token}")
    assert page.url == server.url + "/"  # the token is not left in the address
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
    agent = ax.activity.create("research", "shown under the CSP")
    row = page.locator(f'tr[data-agent-id="{agent}"]')
    await expect(row).to_contain_text("shown under the CSP", timeout=10_000)
    # The inline style applies too.
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(246, 247, 249)"
    assert not [m for m in console if "Content Security Policy" in m], console


async def test_the_charts_show_the_statistics_and_the_detail_shows_the_tree(
    running_pool: ax.Pool,
    db: Engine,
    projector: Projector,
    serve: Any,
    browser_page: Any,
    http: Any,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    echoes = [await ax.enqueue("echo", basic.Echo(text=f"echo {i}")) for i in range(3)]
    failing = [await ax.enqueue("boom", basic.Echo(text=f"boom {i}")) for i in range(2)]
    parent = await ax.enqueue("spawn", basic.Spawn(children=2, child_delay=0.05))
    for task in echoes:
        await ax.get_result(task, timeout=scaled(15))
    for task in failing:
        with pytest.raises(ax.TaskFailedError):
            await ax.get_result(task, timeout=scaled(15))
    children = await ax.get_result(parent, timeout=scaled(15))
    assert len(children) == 2

    async def projected() -> dict[str, Any] | None:
        r = await http.get(server.url + "/api/activities/stats", params={"bucket_seconds": 60})
        body: dict[str, Any] = r.json()
        counts = body["overall"]["counts"]
        return body if (counts["complete"], counts["error"]) == (6, 2) else None

    stats = await async_wait_for(projected, timeout=20, what="8 tasks projected")

    await page.goto(server.url + "/")
    rates = page.locator("#c-success .rate")
    await expect(rates).to_have_count(3, timeout=ms(10))
    assert await rates.evaluate_all("gs => gs.map(g => g.dataset.task)") == [
        "boom",
        "echo",
        "spawn",
    ]
    await expect(rates.locator(".value")).to_have_text(["0%", "100%", "100%"])
    # One bar per bucket of the REST statistics (the page asks for the last hour per minute),
    # adding up to every task; one run time point per bucket where a run ended.
    throughput = page.locator("#c-throughput")
    await expect(throughput).to_have_attribute("data-points", str(len(stats["buckets"])))
    await expect(throughput.locator(".point")).to_have_count(len(stats["buckets"]))
    totals = await throughput.locator(".point").evaluate_all(
        "gs => gs.map(g => [+g.dataset.total, +g.dataset.complete, +g.dataset.error])"
    )
    assert [sum(column) for column in zip(*totals, strict=True)] == [8, 6, 2]
    timed = [b for b in stats["buckets"] if b["overall"]["run"]["p50"] is not None]
    await expect(page.locator("#c-durations .point")).to_have_count(len(timed))
    p50s = await page.locator("#c-durations .point").evaluate_all(
        "cs => cs.map(c => +c.dataset.p50)"
    )
    assert p50s == [b["overall"]["run"]["p50"] for b in timed]

    # The charts follow the feed without a reload.
    await expect(throughput).to_have_attribute("data-total", "8")
    late = await ax.enqueue("boom", basic.Echo(text="late"))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(late, timeout=scaled(15))
    await expect(throughput).to_have_attribute("data-total", "9", timeout=ms(10))
    await expect(rates.locator(".value")).to_have_text(["0%", "100%", "100%"])

    if os.environ.get("AGENTEXEC_CHARTS_SCREENSHOT"):
        await page.screenshot(path=os.environ["AGENTEXEC_CHARTS_SCREENSHOT"])

    # The parent's detail view lists its children with their statuses; a child links back.
    await page.locator(f'tr[data-agent-id="{parent.agent_id}"]').click()
    tree = page.locator("#tree li")
    await expect(tree).to_have_count(2, timeout=ms(10))
    assert await tree.evaluate_all("ls => ls.map(l => l.dataset.agentId)") == children
    await expect(tree.locator(".badge")).to_have_text(["complete", "complete"], timeout=ms(10))
    await expect(tree.locator("a")).to_have_text(["echo", "echo"])
    await expect(page.locator("#d-tree-title")).to_have_text("Children (2)")
    await expect(page.locator("#charts")).to_be_hidden()
    await tree.locator("a").first.click()
    await expect(page.locator("#d-agent")).to_have_text(children[0], timeout=ms(10))
    await expect(page.locator("#d-parent a")).to_have_attribute(
        "href", f"#agent/{parent.agent_id}", timeout=ms(10)
    )
    await expect(page.locator("#tree li")).to_have_count(0)
