"""Pipeline classes are checked when they are defined: step numbering, inputs and outputs; and
a step's transition ends its run when the run cannot go on."""

from __future__ import annotations

import pickle
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from pydantic import BaseModel

import agentexec as ax
from agentexec.events import TaskFailed, TaskQueued
from agentexec.pipelines import advance
from agentexec.results import Outcome
from agentexec.tasks import TaskDefinition
from agentexec.transitions import Append, Store
from tests.apps import workflows


class Ctx(BaseModel):
    name: str


class A(BaseModel):
    a: int


class B(BaseModel):
    b: int


@pytest.fixture
def pipeline() -> ax.Pipeline:
    return ax.Pipeline(ax.Pool(queue_name="definitions"))


def test_a_well_formed_pipeline_registers_one_task_per_step(pipeline: ax.Pipeline) -> None:
    class Good(pipeline.Base, name="good"):
        @pipeline.step(0, "split")
        async def split(self, context: Ctx) -> tuple[A, B]:
            return A(a=1), B(b=2)

        @pipeline.step(1, "join")
        def join(self, a: A, b: B) -> int:
            return a.a + b.b

    assert pipeline.name == "good"
    assert sorted(pipeline.pool.definitions) == ["good.join", "good.split"]
    assert pipeline.pool.definitions["good.split"].context_type is ax.pipelines.StepContext


def test_tuple_output_must_match_the_number_of_inputs(pipeline: ax.Pipeline) -> None:
    with pytest.raises(ax.TaskDefinitionError, match=r"takes 2 inputs \(a, b\), so step 0"):

        class Bad(pipeline.Base):
            @pipeline.step(0, "one")
            async def one(self, context: Ctx) -> A:
                return A(a=1)

            @pipeline.step(1, "two")
            async def two(self, a: A, b: B) -> None: ...

    with pytest.raises(ax.TaskDefinitionError, match="must return a tuple of 2 values"):

        class Bad3(pipeline.Base):
            @pipeline.step(0, "one")
            async def one(self, context: Ctx) -> tuple[A, B, B]:
                return A(a=1), B(b=1), B(b=2)

            @pipeline.step(1, "two")
            async def two(self, a: A, b: B) -> None: ...


def test_inputs_must_match_the_previous_output_types(pipeline: ax.Pipeline) -> None:
    with pytest.raises(
        ax.TaskDefinitionError, match="parameter 'b' is annotated B, but the previous step"
    ):

        class Bad(pipeline.Base):
            @pipeline.step(0, "one")
            async def one(self, context: Ctx) -> tuple[A, A]:
                return A(a=1), A(a=2)

            @pipeline.step(1, "two")
            async def two(self, a: A, b: B) -> None: ...


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("missing_return", "annotate its return type; its output is the input of step 1"),
        # Orders may leave gaps (agentexec 0.3.0's sortable orders, issue 16); not repeat.
        ("repeated", r"step orders are \[1, 1\]; give each step an order of its own"),
        ("first_not_model", "the first step takes the run's context"),
        ("unannotated", "parameter\\(s\\) a have no annotation"),
        ("empty", "needs at least one @pipeline.step"),
    ],
)
def test_malformed_pipelines_are_rejected_with_the_fix(
    pipeline: ax.Pipeline, body: str, message: str
) -> None:
    step = pipeline.step
    with pytest.raises(ax.TaskDefinitionError, match=message):
        if body == "missing_return":

            class P1(pipeline.Base):
                @step(0, "one")
                async def one(self, context: Ctx):  # type: ignore[no-untyped-def]
                    return A(a=1)

                @step(1, "two")
                async def two(self, a: A) -> None: ...

        elif body == "repeated":

            class P2(pipeline.Base):
                @step(1, "one")
                async def one(self, context: Ctx) -> A: ...

                @step(1, "two")
                async def two(self, a: A) -> None: ...

        elif body == "first_not_model":

            class P3(pipeline.Base):
                @step(0, "one")
                async def one(self, context: int) -> A: ...

        elif body == "unannotated":

            class P4(pipeline.Base):
                @step(0, "one")
                async def one(self, context: Ctx) -> A: ...

                @step(1, "two")
                async def two(self, a) -> None: ...  # type: ignore[no-untyped-def]

        else:

            class P5(pipeline.Base):
                pass


def test_one_class_per_pipeline_and_bad_step_arguments(pipeline: ax.Pipeline) -> None:
    class First(pipeline.Base):
        @pipeline.step(0, "one")
        async def one(self, context: Ctx) -> None: ...

    with pytest.raises(ax.TaskDefinitionError, match=r"create another ax\.Pipeline"):

        class Second(pipeline.Base):
            @pipeline.step(0, "one")
            async def one(self, context: Ctx) -> None: ...

    with pytest.raises(ax.TaskDefinitionError, match="whole number >= 0"):
        pipeline.step(-1, "x")
    with pytest.raises(ax.TaskDefinitionError, match="describe the step"):
        pipeline.step(0, " ")
    with pytest.raises(ax.ConfigurationError, match=r"pass the ax\.Pool"):
        ax.Pipeline(object())  # type: ignore[arg-type]


def test_step_handlers_pickle_by_reference_to_worker_processes() -> None:
    definition = workflows.pipeline_pool.definitions["ResearchPipeline.analyze"]
    copy: Any = pickle.loads(pickle.dumps(definition))
    assert isinstance(copy, TaskDefinition)
    assert copy.handler is definition.handler
    assert copy.transition is ax.pipelines.advance


def test_a_transition_that_cannot_go_on_ends_the_run_error() -> None:
    run_id = uuid4()
    ref = {"run_id": run_id, "pipeline": "Gone", "step": 0, "input": {}}
    queued = TaskQueued(
        agent_id=uuid4(),
        task_name="Gone.first",
        queue="q",
        context=msgspec.Raw(msgspec.json.encode(ref)),
        parent_id=run_id,
    )
    writes = advance(queued, Outcome("complete", "Gone.first", result=msgspec.Raw(b"{}")))
    assert [type(w) for w in writes] == [Append, Store]
    end, stored = writes
    assert isinstance(end, Append) and isinstance(end.event, TaskFailed)
    assert isinstance(stored, Store) and stored.agent_id == run_id
    error = (
        "step 0 (first) complete, but the run cannot go on: LookupError: pipeline 'Gone' is "
        "not defined in this process"
    )
    assert (end.event.agent_id, end.event.error) == (run_id, error)
    assert (stored.outcome.status, stored.outcome.error) == ("error", error)
