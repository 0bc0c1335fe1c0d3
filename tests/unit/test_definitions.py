from __future__ import annotations

from uuid import UUID, uuid4

import msgspec
import pytest
from pydantic import BaseModel

import agentexec as ax
from agentexec.results import Outcome, _load
from agentexec.tasks import TaskDefinition


class Ctx(BaseModel):
    x: int


class Out(BaseModel):
    y: int


async def good(agent_id: UUID, context: Ctx) -> Out:
    return Out(y=context.x)


def sync_good(agent_id: UUID, context: Ctx) -> dict[str, int]:
    return {"y": context.x}


def test_context_and_return_types_come_from_annotations() -> None:
    d = TaskDefinition.from_handler("good", good, "q")
    assert d.context_type is Ctx and d.is_async and d.return_type is Out
    assert d.load_result({"y": 3}) == Out(y=3)
    s = TaskDefinition.from_handler("sync", sync_good, "q")
    assert not s.is_async and s.load_result({"y": 1}) == {"y": 1}


def test_a_result_takes_the_return_type_of_its_own_queues_handler() -> None:
    # One name on two queues (as seed 000 does with research_company), two return types.
    ax.Pool(queue_name="typed").task("two_queues")(good)
    ax.Pool(queue_name="plain").task("two_queues")(sync_good)
    outcome = Outcome("complete", "two_queues", result=msgspec.Raw(b'{"y":2}'))
    assert _load(outcome, uuid4(), "typed") == Out(y=2)
    assert _load(outcome, uuid4(), "plain") == {"y": 2}
    # From an agent id alone, either handler may have produced it: the JSON as it is.
    assert _load(outcome, uuid4(), None) == {"y": 2}
    ax.Pool(queue_name="single").task("one_queue")(good)
    single = Outcome("complete", "one_queue", result=msgspec.Raw(b'{"y":3}'))
    assert _load(single, uuid4(), None) == Out(y=3)


def test_decorator_returns_the_handler_unchanged() -> None:
    pool = ax.Pool(queue_name="unit")
    assert pool.task("good_unchanged")(good) is good
    assert pool.definitions["good_unchanged"].queue_name == "unit"


async def no_annotation(agent_id: UUID, context):  # type: ignore[no-untyped-def]
    return None


async def dict_context(agent_id: UUID, context: dict) -> None:  # type: ignore[type-arg]
    return None


async def three(agent_id: UUID, context: Ctx, extra: int) -> None:
    return None


async def str_agent(agent_id: str, context: Ctx) -> None:
    return None


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (no_annotation, "annotate it with the Pydantic model"),
        (dict_context, "annotate it with the Pydantic model"),
        (three, "exactly two parameters"),
        (str_agent, "annotate it `agent_id: UUID`"),
    ],
)
def test_bad_handler_shapes_fail_at_decoration(handler: object, match: str) -> None:
    pool = ax.Pool(queue_name="unit")
    with pytest.raises(ax.TaskDefinitionError, match=match):
        pool.task("bad")(handler)  # type: ignore[type-var]


def test_duplicate_task_name_in_one_pool_is_rejected() -> None:
    pool = ax.Pool(queue_name="unit")
    pool.task("dup")(good)
    with pytest.raises(ax.TaskDefinitionError, match="already has a task named 'dup'"):
        pool.task("dup")(sync_good)


@pytest.mark.parametrize("kwargs", [{"num_workers": 0}, {"concurrency": 0}, {"queue_name": ""}])
def test_bad_pool_arguments_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ax.ConfigurationError):
        ax.Pool(**kwargs)  # type: ignore[arg-type]


def test_engine_must_be_a_sqlalchemy_engine() -> None:
    with pytest.raises(ax.ConfigurationError, match="pass a SQLAlchemy Engine"):
        ax.Pool(engine="sqlite:///x.db")  # type: ignore[arg-type]


def test_definitions_pickle_by_reference_for_spawned_workers() -> None:
    import pickle

    d = TaskDefinition.from_handler("good", good, "q")
    copy = pickle.loads(pickle.dumps(d))
    assert copy.handler is good and copy.context_type is Ctx


class Other(BaseModel):
    z: str


async def takes_other(agent_id: UUID, context: Other) -> None:
    return None


def test_a_name_on_several_queues_is_queued_where_it_can_be_served() -> None:
    from agentexec.queue import _resolve_queue

    settings = ax.CONF
    ax.Pool(queue_name="billing").task("routed")(good)
    ax.Pool(queue_name="audit").task("routed")(takes_other)
    # The context's type tells the queue apart.
    assert _resolve_queue("routed", Ctx(x=1), None, settings) == "billing"
    assert _resolve_queue("routed", Other(z="a"), None, settings) == "audit"
    # The same type on two queues, neither the default: refused with the queues and the fix.
    ax.Pool(queue_name="billing_eu").task("ambiguous")(good)
    ax.Pool(queue_name="billing_us").task("ambiguous")(good)
    with pytest.raises(ValueError, match=r"billing_eu, billing_us .* pass queue_name="):
        _resolve_queue("ambiguous", Ctx(x=1), None, settings)
    assert _resolve_queue("ambiguous", Ctx(x=1), "billing_us", settings) == "billing_us"
    # With the default queue among them, the default (as seed 000's research_company).
    ax.Pool().task("with_default")(good)
    ax.Pool(queue_name="research_queue").task("with_default")(good)
    assert _resolve_queue("with_default", Ctx(x=1), None, settings) == settings.queue_name
