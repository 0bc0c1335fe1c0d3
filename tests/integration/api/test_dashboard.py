"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): a
task enqueued from the test appears, its progress bar reaches 100 % without a reload, its
detail view shows its log, and the page keeps up across a restart of the API server.

Set AGENTEXEC_SCREENSHOT=docs/dashboard.png to save a screenshot of the list,
AGENTEXEC_CHARTS_SCREENSHOT=docs/dashboard-charts.png one of the charts (a day of tasks) and
AGENTEXEC_TREE_SCREENSHOT=docs/dashboard-tree.png one of a task's tree."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec import events
from agentexec.projector import Projector
from tests.apps import basic, streaming
from tests.integration.readmodel.workload import append_all
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


def tree_spec(gate: Path) -> basic.Tree:
    """Four levels: two children, each with two children of their own; one grandchild waits
    for `gate`, one fails, one has two children (the fourth level)."""
    Tree = basic.Tree
    return Tree(
        children=[
            Tree(children=[Tree(gate=str(gate)), Tree()]),
            Tree(children=[Tree(fail=True), Tree(children=[Tree(), Tree()])]),
        ]
    )


def watch(page: Any) -> tuple[list[str], list[str]]:
    """The URLs `page` asks for and the script errors it raises, growing as they come."""
    asked: list[str] = []
    failures: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("pageerror", lambda error: failures.append(str(error)))
    return asked, failures


async def test_the_detail_shows_the_whole_tree_with_live_statuses(
    running_pool: ax.Pool,
    db: Engine,
    projector: Projector,
    serve: Any,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    asked, failures = watch(page)
    await page.goto(server.url + "/")
    await expect(page.locator("#conn")).to_have_text("live", timeout=ms(5))

    gate = tmp_path / "gate"
    root = await ax.enqueue("tree", tree_spec(gate))
    first, second = await ax.get_result(root, timeout=scaled(15))
    first_kids = await ax.get_result(first, timeout=scaled(15))
    second_kids = await ax.get_result(second, timeout=scaled(15))
    deepest = await ax.get_result(second_kids[1], timeout=scaled(15))
    await page.locator(f'tr[data-agent-id="{root.agent_id}"]').click()

    # Three levels without a click (the task, its children, their children), in order.
    nodes = page.locator("#tree li")
    await expect(nodes).to_have_count(6, timeout=ms(15))
    shown = await nodes.evaluate_all("ls => ls.map(l => [l.dataset.agentId, +l.dataset.depth])")
    assert shown == [
        [first, 1],
        [first_kids[0], 2],
        [first_kids[1], 2],
        [second, 1],
        [second_kids[0], 2],
        [second_kids[1], 2],
    ]
    statuses = {
        first: "complete",
        first_kids[0]: "running",  # waits for the gate
        first_kids[1]: "complete",
        second: "complete",
        second_kids[0]: "error",
        second_kids[1]: "complete",
    }
    for agent_id, status in statuses.items():
        node = page.locator(f'#tree li[data-agent-id="{agent_id}"]')
        await expect(node).to_have_attribute("data-status", status, timeout=ms(15))
        await expect(node.locator(":scope > .node-row .badge")).to_have_text(status)
    await expect(page.locator("#d-tree-title")).to_have_text("Children (2)")
    await expect(page.locator(f'#tree li[data-agent-id="{first}"] .kids').first).to_have_text(
        "2 children"
    )

    # The fourth level on a click.
    parent_of_deepest = page.locator(f'#tree li[data-agent-id="{second_kids[1]}"]')
    toggle = parent_of_deepest.locator(":scope > .node-row .toggle")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    deep = parent_of_deepest.locator("li")
    await expect(deep).to_have_count(2, timeout=ms(10))
    assert await deep.evaluate_all("ls => ls.map(l => l.dataset.agentId)") == deepest
    await expect(deep.locator(".badge")).to_have_text(["complete", "complete"])
    assert await deep.evaluate_all("ls => ls.map(l => l.dataset.depth)") == ["3", "3"]

    if os.environ.get("AGENTEXEC_TREE_SCREENSHOT"):
        await page.screenshot(path=os.environ["AGENTEXEC_TREE_SCREENSHOT"], full_page=True)

    # The waiting grandchild ends: its badge follows the feed, nothing is read again.
    reads_before = [url for url in asked if "/children" in url]
    gate.touch()
    waiting = page.locator(f'#tree li[data-agent-id="{first_kids[0]}"]')
    await expect(waiting).to_have_attribute("data-status", "complete", timeout=ms(15))
    await expect(waiting.locator(".badge")).to_have_text("complete")
    assert [url for url in asked if "/children" in url] == reads_before

    # A click hides a branch and shows it again without reading it again.
    branch = page.locator(f'#tree li[data-agent-id="{first}"]')
    await branch.locator(":scope > .node-row .toggle").click()
    await expect(branch.locator("li").first).to_be_hidden()
    await branch.locator(":scope > .node-row .toggle").click()
    await expect(branch.locator("li")).to_have_count(2)
    await expect(branch.locator("li").first).to_be_visible()
    assert [url for url in asked if "/children" in url] == reads_before
    assert not failures, failures  # no script error on the way


async def test_the_tree_pages_children_and_adds_new_ones_live(
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
    asked, failures = watch(page)
    parent = await ax.enqueue("spawn", basic.Spawn(children=25))
    children = await ax.get_result(parent, timeout=scaled(15))

    async def projected() -> bool:
        r = await http.get(f"{server.url}/api/activities/{parent.agent_id}/children")
        return bool(r.status_code == 200 and r.json()["total"] == 25)

    await async_wait_for(projected, timeout=20, what="25 children projected")
    await page.goto(f"{server.url}/#agent/{parent.agent_id}")
    await expect(page.locator("#conn")).to_have_text("live", timeout=ms(5))

    top = page.locator("#tree > li")
    await expect(top).to_have_count(20, timeout=ms(10))
    more = page.locator("#tree-more")
    await expect(more).to_have_text("more (20 of 25 shown)")
    await more.click()
    await expect(top).to_have_count(25, timeout=ms(10))
    await expect(more).to_be_hidden()
    assert await top.evaluate_all("ls => ls.map(l => l.dataset.agentId)") == children
    pages = [url for url in asked if f"/{parent.agent_id}/children" in url]
    assert [url.split("?")[1] for url in pages] == ["page=1&page_size=20", "page=2&page_size=20"]

    # A child queued now shows up from the feed, and then ends.
    late = await ax.enqueue("echo", basic.Echo(text="late", delay=0.3), parent_id=parent.agent_id)
    node = page.locator(f'#tree > li[data-agent-id="{late.agent_id}"]')
    await expect(node).to_be_visible(timeout=ms(10))
    await expect(node).to_have_attribute("data-status", "complete", timeout=ms(10))
    await expect(top).to_have_count(26)
    await expect(page.locator("#d-tree-title")).to_have_text("Children (26)")
    assert not failures, failures  # no script error on the way


def day_of_tasks(now: datetime) -> tuple[list[Any], dict[str, int]]:
    """Tasks of three names over the last week, the most of them in the last day, none near
    a window's edge; and how many each window holds."""
    rng = random.Random(15)
    names = {"research_company": 0.95, "summarise": 0.8, "fetch_filings": 0.5}
    out: list[Any] = []
    windows = {"1h": 0, "24h": 0, "7d": 0}
    ages = [rng.uniform(300, 3000) for _ in range(30)]
    ages += [rng.uniform(2 * 3600, 22 * 3600) for _ in range(160)]
    ages += [rng.uniform(2 * 86400, 6 * 86400) for _ in range(60)]
    for age in ages:
        name = rng.choice(list(names))
        queued = now - timedelta(seconds=age)
        started = queued + timedelta(seconds=rng.uniform(0.05, 2))
        ended = started + timedelta(seconds=rng.lognormvariate(0.5, 0.6))
        agent = uuid.uuid4()
        out += [
            events.TaskQueued(agent_id=agent, task_name=name, queue="q", ts=queued),
            events.TaskStarted(agent_id=agent, task_name=name, worker="w", ts=started),
        ]
        if rng.random() < names[name]:
            out.append(events.TaskCompleted(agent_id=agent, task_name=name, ts=ended))
        else:
            out.append(events.TaskFailed(agent_id=agent, task_name=name, error="502", ts=ended))
        for window, seconds in (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400)):
            windows[window] += age < seconds
    out.sort(key=lambda event: event.ts)
    return out, windows


async def test_the_window_buttons_ask_for_other_statistics(
    redis_conf: str,  # before the projector starts
    db: Engine,
    projector: Projector,
    serve: Any,
    browser_page: Any,
    http: Any,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    server = await serve(db)
    asked, failures = watch(page)
    now = datetime.now(UTC)
    log, totals = day_of_tasks(now)
    append_all(log)

    async def projected() -> bool:
        r = await http.get(server.url + "/api/activities/stats")
        return bool(r.json()["overall"]["total"] == totals["7d"])

    await async_wait_for(projected, timeout=20, what="the week of tasks projected")
    await page.goto(server.url + "/")
    charts = page.locator("#charts")
    throughput = page.locator("#c-throughput")
    await expect(charts).to_have_attribute("data-window", "1h", timeout=ms(10))
    await expect(throughput).to_have_attribute("data-total", str(totals["1h"]))

    def stats_asked() -> list[tuple[datetime, float]]:
        found = []
        for url in asked:
            if "/api/activities/stats" in url:
                query = parse_qs(urlsplit(url).query)
                since = datetime.fromisoformat(query["since"][0].replace("Z", "+00:00"))
                found.append((since, float(query["bucket_seconds"][0])))
        return found

    for name, window, bucket, per in (
        ("24h", timedelta(days=1), 1800, "one bar per 30 minutes"),
        ("7d", timedelta(days=7), 10800, "one bar per 3 hours"),
        ("1h", timedelta(hours=1), 60, "one bar per minute"),
    ):
        button = page.locator(f'#windows button[data-window="{name}"]')
        await button.click()
        await expect(button).to_have_attribute("aria-pressed", "true")
        await expect(charts).to_have_attribute("data-window", name, timeout=ms(10))
        await expect(throughput).to_have_attribute("data-total", str(totals[name]))
        await expect(page.locator("#c-bucket")).to_have_text(per)
        since, seconds = stats_asked()[-1]
        assert seconds == bucket
        # The window, widened to the start of its first bucket (the page's clock is between
        # `now` and this moment).
        assert now - window - timedelta(seconds=bucket) <= since <= datetime.now(UTC) - window
        assert since.timestamp() % bucket == 0
        bars = await throughput.locator(".point").evaluate_all(
            "gs => gs.map(g => +g.dataset.total)"
        )
        assert sum(bars) == totals[name]
        if name == "24h" and os.environ.get("AGENTEXEC_CHARTS_SCREENSHOT"):
            await page.screenshot(path=os.environ["AGENTEXEC_CHARTS_SCREENSHOT"])

    # The last choice is kept for the next visit.
    await page.locator('#windows button[data-window="7d"]').click()
    await expect(charts).to_have_attribute("data-window", "7d", timeout=ms(10))
    await page.reload()
    await expect(charts).to_have_attribute("data-window", "7d", timeout=ms(10))
    await expect(page.locator('#windows button[data-window="7d"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    assert not failures, failures  # no script error on the way
