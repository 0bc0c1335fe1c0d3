"""agentexec 0.3.0's public API, one test per item of issue 16's list, written from 0.3.0's
documented behaviour: each runs against real Redis (and the read model, on SQLite and
PostgreSQL, where the item is about it)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.cli import main
from agentexec.projector import Projector
from agentexec.tasks import RunningTask, TaskDefinition, TaskLease, reset_running, set_running
from tests.apps import program030
from tests.apps.program030_models import Report, ResearchContext
from tests.integration.compat.conftest import ROOT
from tests.support.waiting import scaled


class Context(BaseModel):
    text: str


def test_keyword_only_handlers_are_bound_by_parameter_kind() -> None:
    seen: list[tuple[object, object]] = []

    def keywords(*, context: Context, agent_id: UUID) -> None:
        seen.append((agent_id, context))

    def mixed(agent_id: UUID, *, context: Context) -> None:
        seen.append((agent_id, context))

    def positional(agent_id: UUID, context: Context) -> None:
        seen.append((agent_id, context))

    agent_id, context = uuid4(), Context(text="x")
    for handler in (keywords, mixed, positional):
        TaskDefinition.from_handler("kw", handler, "q").invoke(agent_id, context)
    assert seen == [(agent_id, context)] * 3

    def misnamed(*, agent: UUID, context: Context) -> None: ...

    with pytest.raises(ax.TaskDefinitionError, match="'agent' is neither `agent_id` nor"):
        TaskDefinition.from_handler("kw", misnamed, "q")


def test_pool_add_task_registers_a_handler_defined_elsewhere() -> None:
    pool = ax.Pool(queue_name="compat030_add_task")

    async def handler(*, agent_id: UUID, context: Context) -> str:
        return context.text

    assert pool.add_task("compat030_added", handler, max_retries=0) is handler
    assert pool.definitions["compat030_added"].context_type is Context
    assert pool.definitions["compat030_added"].max_retries == 0
    with pytest.raises(ax.TaskDefinitionError, match="already has a task named"):
        pool.add_task("compat030_added", handler)


async def test_count_active_counts_queued_and_running_activities(
    engine: Engine, projector: Projector
) -> None:
    first = ax.activity.create("compat030_count")
    ax.activity.create("compat030_count")
    ax.activity.complete(first)
    await projector.catch_up()
    with Session(engine) as session:
        assert ax.activity.count_active(session) == 1 == ax.activity.active_count(session)


def test_agent_ids_are_normalized_and_generated() -> None:
    agent_id = ax.activity.generate_agent_id()
    assert isinstance(agent_id, UUID) and agent_id.version == 4
    assert agent_id != ax.activity.generate_agent_id()
    assert ax.activity.normalize_agent_id(str(agent_id)) == agent_id
    assert ax.activity.normalize_agent_id(agent_id) is agent_id
    with pytest.raises(ValueError, match="'nope' is not a UUID"):
        ax.activity.normalize_agent_id("nope")


def test_status_and_activity_are_reachable_from_ax_activity() -> None:
    from agentexec.activity.models import Activity

    assert ax.activity.Status is ax.Status
    assert ax.activity.Status("complete") is ax.activity.Status.COMPLETE
    assert ax.activity.Activity is Activity
    assert {"Status", "Activity"} <= set(ax.activity.__all__)


async def test_create_records_metadata(engine: Engine, projector: Projector) -> None:
    agent_id = ax.activity.create("compat030_meta", metadata={"org": "o1", "n": 2})
    ax.activity.create("compat030_meta", metadata={"org": "o2"})
    await projector.catch_up()
    with Session(engine) as session:
        page = ax.activity.list(session, metadata={"org": "o1"})
    assert [item.agent_id for item in page.items] == [agent_id]
    with pytest.raises(ValueError, match="metadata 'org=o1' is not a dict"):
        ax.activity.create("compat030_meta", metadata="org=o1")  # type: ignore[arg-type]


async def test_update_with_a_status_reports_progress_or_ends_the_activity(
    engine: Engine, projector: Projector
) -> None:
    ended = {status: ax.activity.create("compat030_status") for status in ("complete", "error")}
    ended["canceled"] = ax.activity.create("compat030_status")
    for status, agent_id in ended.items():
        ax.activity.update(agent_id, "Working", percentage=30, status="RUNNING")
        ax.activity.update(agent_id, f"Ended {status}", status=ax.activity.Status(status))
    with pytest.raises(ValueError, match="never goes back to QUEUED; report progress"):
        ax.activity.update(ended["complete"], "Again", status=ax.activity.Status.QUEUED)
    with pytest.raises(ValueError, match="'paused' is not an activity status; use one of"):
        ax.activity.update(ended["complete"], "Paused", status="paused")
    await projector.catch_up()
    with Session(engine) as session:
        for status, agent_id in ended.items():
            detail = ax.activity.detail(session, agent_id)
            assert detail is not None
            assert detail.status == status
            assert [(log.message, log.status) for log in detail.logs][1:] == [
                ("Working", ax.activity.Status.RUNNING),
                (f"Ended {status}", ax.activity.Status(status)),
            ]
            if status == "complete":
                assert detail.latest_percentage == 100


def test_a_handler_cannot_cancel_its_own_task_through_update(redis_conf: str) -> None:
    agent_id = uuid4()
    lease = TaskLease("stream", b"1-0", "group", "consumer")
    token = set_running(RunningTask(agent_id, "compat030_status", 1, lease))
    try:
        with pytest.raises(ValueError, match=r"return \(or raise\) to end it, or cancel it"):
            ax.activity.update(agent_id, "Stop", status="canceled")
    finally:
        reset_running(token)


async def test_task_failed_error_says_how_many_attempts_were_made(pool030: ax.Pool) -> None:
    task = await ax.enqueue("compat030_flaky", ResearchContext(company="Initech"))
    with pytest.raises(ax.TaskFailedError) as failed:
        await ax.get_result(task, timeout=scaled(60))
    assert failed.value.attempts == 2  # max_retries=1: the first attempt and one retry


def test_version_is_the_installed_distribution_s() -> None:
    assert ax.__version__ == importlib.metadata.version("agentexec")


def test_agentexec_run_is_agentexec_worker_with_create_tables() -> None:
    run, worker = main.commands["run"], main.commands["worker"]
    assert [p.name for p in run.params] == [*(p.name for p in worker.params), "create_tables"]
    env: dict[str, str | None] = {"AGENTEXEC_WORKER_MODULE": None}  # None: unset
    refused = CliRunner().invoke(
        main, ["run", "tests.apps.program030:pool", "--workers", "2", "--create-tables"], env=env
    )
    assert refused.exit_code == 2
    assert "the pool tests.apps.program030:pool has no database" in refused.output
    assert "ax.Pool(engine=...)" in refused.output
    unnamed = CliRunner().invoke(main, ["run"], env=env)
    assert unnamed.exit_code == 2
    assert "name the pool to run: agentexec run myapp.worker:pool" in unnamed.output


def test_pipeline_steps_sort_by_order_with_optional_descriptions() -> None:
    pipeline = ax.Pipeline(ax.Pool(queue_name="compat030_steps"))

    class Sorted(pipeline.Base):
        @pipeline.step(30)
        async def last_one(self, context: Context) -> Context: ...  # defined first

        @pipeline.step(5, "first step")
        async def first(self, context: Context) -> Context: ...

    assert [(s.index, s.order, s.method_name, s.description) for s in pipeline.steps] == [
        (0, 5, "first", "first step"),
        (1, 30, "last_one", "last one"),
    ]
    assert [(s.index, s.order) for s in program030.pipeline.steps] == [(0, 10), (1, 20)]


def test_only_importable_model_classes_are_named_with_results() -> None:
    from agentexec.results import result_type_of

    class Local(BaseModel):
        x: int = 1

    script = type("Script", (BaseModel,), {"__module__": "__main__"})
    assert result_type_of(Report(company="a", findings=[])) == f"{Report.__module__}:Report"
    assert result_type_of(Local()) is None  # defined in a function: no importable name
    assert result_type_of(script()) is None  # a script's __main__ is another process's script
    assert result_type_of({"company": "a"}) is None


CLIENT = textwrap.dedent(
    """
    import asyncio, json
    from pydantic import BaseModel
    import agentexec as ax

    class ResearchContext(BaseModel):  # the client's own copy: no task is registered here
        company: str

    async def main():
        task = await ax.enqueue(
            "compat030_research", ResearchContext(company="Globex"), queue_name="compat030"
        )
        result = await ax.get_result(task, timeout={timeout})
        print(json.dumps([type(result).__module__, type(result).__name__]))

    asyncio.run(main())
    """
)


def _client(cwd: Path, timeout: float) -> list[str]:
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", CLIENT.format(timeout=timeout)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + scaled(30),
    )
    assert done.returncode == 0, done.stderr
    decoded: list[str] = json.loads(done.stdout)
    return decoded


def test_results_keep_their_model_class_where_it_can_be_imported(
    pool030: ax.Pool, tmp_path: Path
) -> None:
    # From the project's root, tests.apps.program030_models imports: the result is a Report.
    assert _client(ROOT, scaled(60)) == [Report.__module__, "Report"]
    # Where the module cannot be imported, the result is the JSON it was stored as.
    assert _client(tmp_path, scaled(60)) == ["builtins", "dict"]
