"""What may be recorded: names that fit their columns, and bounded, storable text."""

from __future__ import annotations

import uuid
from uuid import UUID

import msgspec
import pytest
from pydantic import BaseModel

import agentexec as ax
from agentexec import events
from agentexec.config import Settings
from agentexec.errors import ConfigurationError, InvalidNameError, TaskDefinitionError
from agentexec.events import TaskFailed, TaskProgress, TaskRetried
from agentexec.limits import NAME_MAX_CHARS, describe_exception, recordable
from agentexec.results import Outcome, encode_outcome

LONG = "n" * (NAME_MAX_CHARS + 1)


class Ctx(BaseModel):
    x: int = 0


async def handler(agent_id: UUID, context: Ctx) -> int:
    return context.x


def test_text_within_the_limit_is_kept_as_is() -> None:
    text = "Phase 2 of 3: reading the filings"
    assert recordable(text) is text


def test_nul_and_lone_surrogates_are_escaped_visibly() -> None:
    shown = recordable("a\x00b bad \udc80 text \ud83d")
    assert shown == "a\\x00b bad \\udc80 text \\ud83d"
    shown.encode("utf-8")  # storable anywhere


def test_over_long_text_is_cut_to_the_byte_limit_with_a_marker() -> None:
    ax.CONF.max_message_bytes = 4096
    shown = recordable("é" * 5_000_000)
    assert len(shown.encode()) <= 4096
    assert shown.startswith("éé") and "AGENTEXEC_MAX_MESSAGE_BYTES" in shown[-120:]
    assert "5,000,000" in shown[-120:]


def test_a_secret_is_redacted_before_the_cut() -> None:
    ax.CONF.max_message_bytes = 1024
    key = "sk-" + "k" * 40
    shown = recordable("x" * 980 + key + "y" * 5000)
    assert "kkkkkkkkkkkkkkkk" not in shown


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_message_bytes == 64 * 1024
    monkeypatch.setenv("AGENTEXEC_MAX_MESSAGE_BYTES", "2048")
    assert Settings().max_message_bytes == 2048
    monkeypatch.setenv("AGENTEXEC_MAX_MESSAGE_BYTES", "10")
    with pytest.raises(ValueError, match="max_message_bytes"):
        Settings()


def test_any_exception_can_be_described() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert describe_exception(ValueError("bad \udc80 text")) == "ValueError: bad \\udc80 text"
    assert describe_exception(Unprintable()).startswith("Unprintable: <")
    assert "pw9" not in describe_exception(ConnectionError("redis://u:pw9@h refused"))


def test_an_event_with_unencodable_text_is_encoded_with_it_escaped() -> None:
    failed = TaskFailed(
        agent_id=uuid.uuid4(),
        task_name="t",
        error="ValueError: bad \udc80 text",
        message="Task failed with error: bad \udc80 text",
        metadata={"note\udc81": ["x\udc82", {"k": "\x00"}]},
    )
    decoded = events.decode(events.encode(failed))
    assert isinstance(decoded, TaskFailed)
    assert decoded.error == "ValueError: bad \\udc80 text"
    assert decoded.metadata == {"note\\udc81": ["x\\udc82", {"k": "\\x00"}]}


def test_event_texts_are_bounded_and_redacted_when_encoded() -> None:
    ax.CONF.max_message_bytes = 2048
    aid = uuid.uuid4()
    progress = events.decode(
        events.encode(TaskProgress(agent_id=aid, task_name="t", message="m" * 10**6))
    )
    assert len(progress.message.encode()) <= 2048
    retried = events.decode(
        events.encode(
            TaskRetried(
                agent_id=aid, task_name="t", error="redis://u:pw7@h \x00", delay=1.0, message="m"
            )
        )
    )
    assert isinstance(retried, TaskRetried) and retried.error == "redis://u:***@h \\x00"


def test_an_outcome_error_is_recordable() -> None:
    data = encode_outcome(Outcome("error", "t", error="bad \udc80 redis://u:pw8@h"))
    assert msgspec.json.decode(data)["error"] == "bad \\udc80 redis://u:***@h"


def test_names_longer_than_their_column_are_refused_where_declared() -> None:
    with pytest.raises(TaskDefinitionError, match=f"{NAME_MAX_CHARS}"):
        TaskDefinition_from(LONG)
    with pytest.raises(TaskDefinitionError, match="NUL"):
        TaskDefinition_from("a\x00b")
    with pytest.raises(InvalidNameError, match="queue name"):
        ax.Pool(queue_name=LONG)
    with pytest.raises(InvalidNameError, match="braces"):
        ax.Pool(queue_name="a{b}")
    with pytest.raises(ConfigurationError, match=f"{NAME_MAX_CHARS}"):
        ax.Tracker(LONG, "batch")
    with pytest.raises(InvalidNameError, match="task name"):
        ax.activity.create(LONG)
    with pytest.raises(ValueError, match="AGENTEXEC_QUEUE_NAME"):
        ax.CONF.queue_name = LONG


def test_the_error_names_the_value_the_limit_and_the_fix() -> None:
    with pytest.raises(InvalidNameError) as raised:
        ax.Pool(queue_name="q" * 300)
    message = str(raised.value)
    assert "qqqq" in message and "300 characters" in message and "255" in message
    assert "shorter" in message
    assert len(message) < 400  # the value is shown shortened


def TaskDefinition_from(name: str) -> None:
    ax.Pool(queue_name="limits").task(name)(handler)


async def test_enqueue_refuses_a_name_before_touching_redis() -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"  # never reached
    with pytest.raises(InvalidNameError, match="task name"):
        await ax.enqueue(LONG, Ctx())
    with pytest.raises(InvalidNameError, match="queue name"):
        await ax.enqueue("t", Ctx(), queue_name=LONG)


def test_a_pipeline_name_longer_than_its_column_is_refused() -> None:
    pipeline = ax.Pipeline(ax.Pool(queue_name="limits"))
    with pytest.raises(TaskDefinitionError, match="pipeline name"):

        class Long(pipeline.Base, name="p" * 300):
            @pipeline.step(0, "only")
            async def only(self, context: Ctx) -> int:
                return 1
