"""The live terminal monitor behind `agentexec monitor`: a table of agents and their progress,
and one of task names with their counts by status and their rates (tasks completed and
failed per second over the last minute), updated from the event log as events arrive (XREAD
BLOCK), not by polling the database.

The initial state comes from the read model when a database URL is given (its rows, its
counts and the tasks ended in the last minute, then the events after the projector's
checkpoint), else from the tail of the event log. Rates are measured on the events' own
timestamps. With several partitions (`AGENTEXEC_PARTITIONS`) every partition's log is read,
each from its own checkpoint, and their events applied in time order.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .activity.state import ActivityState, evolve
from .broker import LogPage
from .eventlog import Recorded
from .events import ACTIVE, TERMINAL, Status
from .positions import ORIGIN, Position
from .runtime import Runtime, current

__all__ = ["RATE_WINDOW", "Board", "Row", "load_board", "load_partitions", "run_monitor"]

RATE_WINDOW = 60.0
"""Seconds over which the monitor measures rates."""

_STYLES = {
    Status.QUEUED: "yellow",
    Status.RUNNING: "cyan",
    Status.COMPLETE: "green",
    Status.ERROR: "red",
    Status.CANCELED: "magenta",
}


@dataclass(frozen=True, slots=True)
class Row:
    """What the monitor shows of one agent: its activity state."""

    state: ActivityState

    @property
    def agent_id(self) -> UUID:
        return self.state.agent_id

    @property
    def task(self) -> str:
        return self.state.task_name

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def updated(self) -> datetime:
        """Naive UTC."""
        return self.state.updated_at

    @property
    def message(self) -> str:
        return self.state.message or ""

    @property
    def percentage(self) -> int | None:
        return self.state.percentage

    @property
    def parent_id(self) -> UUID | None:
        return self.state.parent_id


class Board:
    """The latest state of each agent, folded from events as the read model folds them
    (`agentexec.activity.state.evolve`).

    `limit` rows are shown (active agents first, then the most recently updated); at most
    `keep` finished agents are remembered. `counts` holds, per task name, how many of the
    agents the board has seen are in each status (whether remembered or not); `ended`, the
    task name, status and time of each task ended within `RATE_WINDOW` seconds of the latest.
    """

    def __init__(self, limit: int = 10, keep: int = 1000) -> None:
        self.limit = limit
        self.keep = keep
        self.rows: dict[UUID, Row] = {}
        self.counts: dict[str, Counter[Status]] = {}
        self.ended: deque[tuple[datetime, str, Status]] = deque()

    def apply(self, recorded: Recorded) -> None:
        agent_id = recorded.event.agent_id
        row = self.rows.get(agent_id)
        before = row.state if row is not None else None
        after = evolve(before, recorded)
        if after is None or after is before:
            return
        self.rows[agent_id] = Row(after)
        if before is not None:
            counted = self.counts.setdefault(before.task_name, Counter())
            counted[before.status] = max(counted[before.status] - 1, 0)
        self.counts.setdefault(after.task_name, Counter())[after.status] += 1
        if after.terminal:
            self.record_end(recorded.ts, after.task_name, after.status)
            if len(self.rows) > self.keep:
                self._forget_finished()

    def record_end(self, at: datetime, task_name: str, status: Status) -> None:
        """Count a task ended at `at` (naive UTC) in the rates."""
        self.ended.append((at, task_name, status))
        horizon = at - timedelta(seconds=RATE_WINDOW)
        while self.ended and self.ended[0][0] < horizon:
            self.ended.popleft()

    def rates(self, now: datetime | None = None) -> dict[str, tuple[float, float]]:
        """Per task name: tasks completed and failed per second over the `RATE_WINDOW`
        seconds before `now` (naive UTC; default the current time)."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        since = now - timedelta(seconds=RATE_WINDOW)
        ended: dict[str, Counter[Status]] = {}
        for at, name, status in self.ended:
            if since < at <= now:
                ended.setdefault(name, Counter())[status] += 1
        return {
            name: (c[Status.COMPLETE] / RATE_WINDOW, c[Status.ERROR] / RATE_WINDOW)
            for name, c in ended.items()
        }

    def load(self, activities: Iterable[Any], *, counted: bool = False) -> None:
        """Start from read-model rows (`agentexec.activity.models.Activity`); `counted`:
        `counts` holds them already."""
        for a in activities:
            state = ActivityState(
                agent_id=a.agent_id,
                task_name=a.agent_type,
                status=Status(a.status),
                created_at=_naive_utc(a.created_at),
                updated_at=_naive_utc(a.updated_at),
                last_event_id=a.last_event_id,
                message=a.latest_message,
                percentage=a.latest_percentage,
                attempts=a.attempts,
                error=a.error,
                parent_id=a.parent_id,
                queue=a.queue,
                priority=a.priority,
                metadata=a.metadata_,
                started_at=a.started_at and _naive_utc(a.started_at),
                finished_at=a.finished_at and _naive_utc(a.finished_at),
            )
            self.rows[a.agent_id] = Row(state)
            if not counted:
                self.counts.setdefault(state.task_name, Counter())[state.status] += 1

    @property
    def active(self) -> int:
        return sum(1 for r in self.rows.values() if r.status in ACTIVE)

    def shown(self) -> list[Row]:
        """The rows the table shows, in order."""
        rows = sorted(self.rows.values(), key=lambda r: r.updated, reverse=True)
        rows.sort(key=lambda r: r.status not in ACTIVE)
        return rows[: self.limit]

    def table(self) -> Table:
        table = Table(title=f"Active Agents: {self.active}", expand=False)
        table.add_column("Status", no_wrap=True, min_width=8)
        table.add_column("Task", max_width=36)
        table.add_column("Message", max_width=60)
        table.add_column("Progress", no_wrap=True, min_width=20)
        for row in self.shown():
            percentage = row.percentage or (100 if row.status is Status.COMPLETE else 0)
            progress = Table.grid(padding=(0, 1))
            progress.add_row(
                ProgressBar(total=100, completed=percentage, width=15),
                Text(f"{percentage:>3}%"),
            )
            table.add_row(
                Text(row.status.wire, style=_STYLES[row.status]),
                _cell(f"└ {row.task}" if row.parent_id is not None else row.task),
                _cell(row.message),
                progress,
            )
        return table

    def totals(self, now: datetime | None = None) -> Table:
        """The task names' table: counts by status and rates."""
        rates = self.rates(now)
        table = Table(title=f"Tasks (rates over the last {RATE_WINDOW:.0f}s)", expand=False)
        table.add_column("Task", max_width=36)
        for status in Status:
            table.add_column(status.wire.capitalize(), justify="right")
        table.add_column("Completed/s", justify="right")
        table.add_column("Failed/s", justify="right")
        for name in sorted(self.counts):
            counts = self.counts[name]
            completed, failed = rates.get(name, (0.0, 0.0))
            table.add_row(
                _cell(name),
                *(str(counts[status]) for status in Status),
                f"{completed:.2f}",
                Text(f"{failed:.2f}", style="red" if failed else ""),
            )
        return table

    def view(self) -> Group:
        """What the monitor shows: the agents' table, then the task names'."""
        return Group(self.table(), self.totals())

    def _forget_finished(self) -> None:
        finished = sorted(
            (r for r in self.rows.values() if r.status in TERMINAL), key=lambda r: r.updated
        )
        for row in finished[: len(self.rows) - self.keep]:
            del self.rows[row.agent_id]


def _cell(text: str) -> Text:
    # Columns may shrink to fit the terminal; their text is cut with an ellipsis, not wrapped.
    return Text(text, no_wrap=True, overflow="ellipsis")


def _naive_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def _load_database(board: Board, database_url: str, streams: list[str]) -> list[str]:
    """Load the read model's latest rows; returns the checkpoint of each of `streams` (the
    partitions' logs) to read it from."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from .activity.models import Activity, Checkpoint
    from .databases import create_sync_engine

    engine = create_sync_engine(database_url)
    try:
        with Session(engine) as db:
            named = select(Checkpoint.name, Checkpoint.position).where(Checkpoint.name.in_(streams))
            found = {name: position for name, position in db.execute(named)}
            counts = select(Activity.agent_type, Activity.status, func.count()).group_by(
                Activity.agent_type, Activity.status
            )
            for name, status, count in db.execute(counts):
                board.counts.setdefault(name, Counter())[Status(status)] += count
            since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=RATE_WINDOW)
            ended = (
                select(Activity.finished_at, Activity.agent_type, Activity.status)
                .where(Activity.finished_at >= since, Activity.status.in_(TERMINAL))
                .order_by(Activity.finished_at)
            )
            for at, name, status in db.execute(ended):
                if at is not None:
                    board.record_end(_naive_utc(at), name, Status(status))
            recent = select(Activity).order_by(Activity.updated_at.desc())
            for statuses, limit in ((ACTIVE, board.keep), (TERMINAL, board.limit)):
                rows = db.scalars(recent.where(Activity.status.in_(statuses)).limit(limit))
                board.load(rows, counted=True)
    finally:
        engine.dispose()
    return [found.get(stream) or str(ORIGIN) for stream in streams]


def _apply_pages(board: Board, pages: Iterable[LogPage]) -> None:
    # An entry that is no event is not in the page: the projector dead-letters it. Each
    # agent's events are in one partition: merged by time, each agent's keep their order.
    for recorded in sorted((r for page in pages for r in page.recorded), key=_when):
        board.apply(recorded)


def _when(recorded: Recorded) -> Position:
    return recorded.position


def load_board(
    board: Board,
    database_url: str | None = None,
    history: int = 10_000,
    runtime: Runtime | None = None,
) -> str:
    """Fill `board` with the current state; returns the stream id to follow the log from
    (of partition 0: with several partitions, `load_partitions` gives one per partition)."""
    return load_partitions(board, database_url, history, runtime)[0]


def load_partitions(
    board: Board,
    database_url: str | None = None,
    history: int = 10_000,
    runtime: Runtime | None = None,
) -> list[str]:
    """Fill `board` with the current state of every partition; returns, for each
    partition, the stream id to follow its log from."""
    runtime = runtime or current()
    broker = runtime.broker
    partitions = list(runtime.partitions)
    if database_url:
        streams = [runtime.partitions.keys(p).events for p in partitions]
        positions = _load_database(board, database_url, streams)
        for p in partitions:
            while True:
                page = broker.read_log_sync(Position.parse(positions[p]), count=1000, partition=p)
                if page.last is None:
                    break
                _apply_pages(board, [page])
                positions[p] = str(page.last)
        return positions
    tails = [broker.tail_log_sync(history, partition=p) for p in partitions]
    _apply_pages(board, tails)
    return [str(tail.last or ORIGIN) for tail in tails]


def run_monitor(
    *,
    database_url: str | None = None,
    limit: int = 10,
    duration: float | None = None,
    once: bool = False,
    console: Console | None = None,
    runtime: Runtime | None = None,
) -> Board:
    """Show the table until interrupted (or for `duration` seconds; `once`: print it once)."""
    runtime = runtime or current()
    console = console or Console()
    board = Board(limit)
    last = load_partitions(board, database_url, runtime=runtime)
    if once:
        console.print(board.view())
        return board
    broker = runtime.broker
    deadline = None if duration is None else time.monotonic() + duration
    # One blocking read per partition in turn (a cluster serves each from its own primary).
    block_ms = max(1, min(runtime.settings.block_ms, 500) // len(last))
    with Live(board.view(), console=console, refresh_per_second=4) as live:
        while deadline is None or time.monotonic() < deadline:
            pages = []
            for p, after in enumerate(last):
                page = broker.wait_log_sync(
                    Position.parse(after), count=500, block_ms=block_ms, partition=p
                )
                pages.append(page)
                last[p] = str(page.last or after)
            _apply_pages(board, pages)
            live.update(board.view())  # each turn: the rates move with time too
    return board
