"""Pipelines: workflows of steps, each step a task of its own, chained by events.

    pipeline = ax.Pipeline(pool)

    class ResearchPipeline(pipeline.Base):
        @pipeline.step(0, "parallel research")
        async def gather_data(self, context: InputContext) -> tuple[Brand, Market]: ...

        @pipeline.step(1, "analysis")
        async def analyze(self, brand: Brand, market: Market) -> FinalReport: ...

    task = await pipeline.enqueue(context=InputContext(company="Anthropic"))
    report = await ax.get_result(task)

A run is an activity of its own (its task name is the pipeline's name). Each step runs as a
child task (`parent_id` = the run's agent id) named `ResearchPipeline.gather_data`, on the
pool's queue. The transaction that ends a step (see `agentexec.transitions`) also queues the
next step with the step's output as its input, or ends the run: no worker waits on a run, each
step is queued exactly once, and a step whose worker dies is redelivered on its own, with its
input, without running the steps before it again.

`ax.cancel(run_id)` marks the run canceled: workers stop the run's running step and start
none of its queued ones (a cancel of a parent is a cancel of its children), and the
transaction that ends a step queues no next step once the run's cancel marker exists.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import msgspec
from pydantic import BaseModel, TypeAdapter

from . import tenants, tracing
from .config import Settings
from .errors import ConfigurationError, ContextError, InvalidNameError, TaskDefinitionError
from .eventlog import EventLog
from .events import (
    Ending,
    PipelineStepFinished,
    PipelineStepStarted,
    Priority,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
)
from .limits import check_name, describe_exception, describe_traceback
from .queue import check_parent, serialise_context
from .results import Outcome
from .runtime import current
from .tasks import RUNNING_TASK, ParentId, Task, TaskDefinition, TaskRegistry, running_task
from .transitions import Append, IfCanceled, Queue, Store, Write

__all__ = ["Pipeline", "PipelineBase", "Step", "StepContext"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__agentexec_step__"


class StepContext(BaseModel):
    """The context of a step task: its run, its place in the pipeline, and its input."""

    run_id: UUID
    pipeline: str
    step: int
    input: Any = None
    """JSON: the run's context for step 0, else the previous step's output."""


class _StepRef(msgspec.Struct):
    run_id: UUID
    pipeline: str
    step: int


@dataclass(frozen=True)
class _Options:
    order: int
    description: str | None
    max_retries: int | None
    retry_on: tuple[type[BaseException], ...]
    timeout: float | None


@dataclass(frozen=True)
class Step:
    """One checked step of a pipeline."""

    index: int
    """Its place in the run, 0 first (the steps sorted by `order`)."""
    order: int
    """The order `@pipeline.step` gave it."""
    description: str
    method_name: str
    task_name: str
    method: Callable[..., Any]
    parameters: tuple[tuple[str, Any], ...]
    """The step's inputs: (parameter name, annotation), after `self`."""
    return_type: Any
    """The return annotation, or None when the method has none."""
    options: _Options
    adapters: tuple[TypeAdapter[Any], ...]

    def arguments(self, value: Any) -> list[Any]:
        """The step's arguments from its input JSON: the whole value for one parameter, the
        items of a list (a tuple output) for several."""
        adapters = self.adapters
        if len(adapters) == 1:
            return [adapters[0].validate_python(value)]
        if not isinstance(value, list) or len(value) != len(adapters):
            raise TypeError(
                f"step {self.index} ({self.method_name}) takes {len(adapters)} inputs; got "
                f"{type(value).__name__} {str(value)[:100]!r}"
            )
        return [a.validate_python(v) for a, v in zip(adapters, value, strict=True)]


class PipelineBase:
    """Base class of a pipeline's steps; subclass `pipeline.Base`, not this.

    A fresh instance runs each step, with `run_id` (the run's agent id) and `agent_id` (the
    step task's) set; steps share data through their inputs and outputs only.
    """

    _pipeline: ClassVar[Pipeline | None] = None
    run_id: UUID
    agent_id: UUID

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_pipeline" in cls.__dict__:
            return  # a `pipeline.Base` itself
        owner = cls._pipeline
        if owner is None:
            raise TaskDefinitionError(
                f"class {cls.__qualname__}: subclass `pipeline.Base` of an "
                "`ax.Pipeline(pool)`, not PipelineBase."
            )
        owner._define(cls, name or cls.__name__)


class Pipeline:
    """A multi-step workflow run by `pool`'s workers: define its steps in one subclass of
    `pipeline.Base`, then `await pipeline.enqueue(context=...)`."""

    def __init__(self, pool: TaskRegistry) -> None:
        if not isinstance(pool, TaskRegistry):
            raise ConfigurationError(
                f"ax.Pipeline(pool) got a {type(pool).__name__}; pass the ax.Pool whose "
                "workers run the steps."
            )
        self.pool = pool
        self.Base: type[PipelineBase] = type(
            "Base", (PipelineBase,), {"_pipeline": self, "__module__": __name__}
        )
        self.name: str | None = None
        """The pipeline's name (its class's name unless `class P(pipeline.Base, name=...)`)."""
        self.steps: tuple[Step, ...] = ()
        self._cls: type[PipelineBase] | None = None

    def step(
        self,
        order: int,
        description: str | None = None,
        *,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Mark a method as a step of the pipeline; the steps run by ascending `order`.

        Orders are whole numbers >= 0, each used once; they need not be contiguous (`10`,
        `20`, `30` leave room for a step in between). `description` (default: the method's
        name, its underscores as spaces) is shown in the run's progress messages. The first
        step takes the run's context; each later step takes the previous step's output (one
        parameter), or the items of its tuple output (one parameter each). Retries and
        timeout work as on
        `@pool.task`. Checked when the class is defined.
        """
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise TaskDefinitionError(
                f"@pipeline.step({order!r}, ...): the order is a whole number >= 0; steps run "
                "from the lowest, e.g. 0, 1, 2 or 10, 20, 30."
            )
        if description is not None and (
            not isinstance(description, str) or not description.strip()
        ):
            raise TaskDefinitionError(
                f"@pipeline.step({order}, {description!r}): describe the step in a few words, "
                "or leave the description out to show the method's name."
            )
        options = _Options(order, description, max_retries, retry_on, timeout)

        def mark(method: F) -> F:
            setattr(method, _MARK, options)
            return method

        return mark

    @property
    def context_type(self) -> type[BaseModel]:
        """The model of the run's context (step 0's parameter)."""
        context_type: type[BaseModel] = self._defined().steps[0].parameters[0][1]
        return context_type

    def _defined(self) -> Pipeline:
        if self._cls is None:
            raise ConfigurationError(
                "this pipeline has no steps yet; define `class MyPipeline(pipeline.Base)` "
                "with @pipeline.step methods first."
            )
        return self

    async def enqueue(
        self,
        context: BaseModel,
        *,
        priority: Priority | str = Priority.LOW,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        parent_id: ParentId = RUNNING_TASK,
        tenant: str | None = None,
    ) -> Task:
        """Start a run with `context` and return its `Task` (the run's agent id).

        The run's activity and its first step are recorded in one transaction. Each step's
        task is a child of the run; the run itself is a child of `parent_id`, by default of
        the task whose handler starts it (see `ax.enqueue`).
        `ax.get_result(task)` returns the last step's output, or raises `TaskFailedError`
        when a step fails for good. `idempotency_key` and Redis outages behave as in
        `ax.enqueue`. Raises `ContextError` when `context` is not the first step's model.
        `tenant` (or `metadata={"tenant": ...}`) is the run's and every step's, by default the
        tenant of the task whose handler starts the run (see docs/tenants.md).
        """
        self._defined()
        name = str(self.name)
        _, metadata = tenants.resolve(tenant, metadata, f"{name}: enqueue")
        expected = self.context_type
        if not isinstance(context, expected):
            raise ContextError(
                f"{name}: enqueue(context=...) got a {type(context).__name__}; the first step "
                f"takes {expected.__module__}.{expected.__qualname__}; pass "
                f"{expected.__name__}(...)."
            )
        priority = Priority(priority)
        runtime = current()
        settings = runtime.settings
        data = serialise_context(name, context, settings)
        parent = await check_parent(parent_id, f"{name}: enqueue", runtime)
        dedup = None if idempotency_key is None else f"pipeline:{name}:{idempotency_key}"
        run = TaskQueued(
            agent_id=runtime.partitions.task_id(parent, dedup),
            task_name=name,
            priority=priority,
            message=settings.activity_message_create,
            metadata=metadata,
            parent_id=parent,
        )
        queue = self.pool.queue_name
        first = _step_queued(self.steps[0], run.agent_id, name, queue, run, data, settings)
        with tracing.enqueueing(first):
            queued = await runtime.broker.enqueue_pipeline(
                run,
                first,
                dedup=dedup,
                what=f"{name}: enqueue",
                consequence="The run was not started.",
            )
        return Task(
            agent_id=queued.agent_id,
            task_name=name,
            queue_name=self.pool.queue_name,
            priority=priority,
            event_id=queued.event_id,
        )

    def _define(self, cls: type[PipelineBase], name: str) -> None:
        try:
            check_name(name, "pipeline name")  # its runs' task name
        except InvalidNameError as e:
            raise TaskDefinitionError(f"class {cls.__qualname__}: {e}") from None
        if self._cls is not None:
            raise TaskDefinitionError(
                f"class {cls.__qualname__}: this pipeline already has its steps in "
                f"{self._cls.__qualname__}; create another ax.Pipeline(pool) for another "
                "pipeline."
            )
        steps = _check_steps(cls, name)
        definitions = [
            TaskDefinition.from_handler(
                step.task_name,
                _handler(cls, self, step),
                self.pool.queue_name,
                step.options.max_retries,
                step.options.retry_on,
                step.options.timeout,
                transition=advance,
            )
            for step in steps
        ]
        for definition in definitions:
            self.pool.add(definition)
        self._cls, self.name, self.steps = cls, name, steps
        _pipelines[name] = self

    async def _run_step(self, step: Step, agent_id: UUID, context: StepContext) -> Any:
        assert self._cls is not None
        count = len(self.steps)
        started = PipelineStepStarted(
            agent_id=context.run_id,
            task_name=str(self.name),
            step=step.index,
            steps=count,
            step_agent_id=agent_id,
            message=f"Step {step.index + 1}/{count}: {step.description}",
            percentage=step.index * 100 // count,
        )
        # Fenced by the step's lease: a worker that lost the step records nothing of it.
        run = running_task()
        await EventLog(current().broker).append(
            started, run.lease if run is not None else None, check=False
        )
        arguments = step.arguments(context.input)
        instance = self._cls()
        instance.run_id, instance.agent_id = context.run_id, agent_id
        if inspect.iscoroutinefunction(step.method):
            return await step.method(instance, *arguments)
        return await asyncio.to_thread(step.method, instance, *arguments)

    def _transition(
        self, ref: _StepRef, queued: TaskQueued, outcome: Outcome, settings: Settings
    ) -> list[Write]:
        count, name = len(self.steps), str(self.name)
        step = self.steps[ref.step]
        label = f"Step {step.index + 1}/{count} ({step.description})"
        finished = PipelineStepFinished(
            agent_id=ref.run_id,
            task_name=name,
            step=step.index,
            steps=count,
            step_agent_id=queued.agent_id,
            outcome=outcome.status,
            message=f"{label} {outcome.status}",
            percentage=(step.index + 1) * 100 // count
            if outcome.status is Ending.COMPLETE
            else None,
        )
        where = f"step {step.index} ({step.method_name})"
        if outcome.status is Ending.COMPLETE and step.index + 1 < count:
            nxt = self._next_step(step, ref.run_id, queued, outcome.result, settings)
            # A cancel of the run that came while this step finished its work still stops the
            # run here; decided inside the transaction that records the step's outcome.
            return [
                IfCanceled(
                    ref.run_id,
                    then=(
                        Append(finished),
                        *_end_run(
                            ref,
                            name,
                            Ending.CANCELED,
                            f"canceled after {where} completed",
                            settings,
                        ),
                    ),
                    otherwise=(
                        Append(msgspec.structs.replace(finished, next_agent_id=nxt.agent_id)),
                        Queue(nxt),
                    ),
                )
            ]
        if outcome.status is Ending.COMPLETE:
            end = TaskCompleted(
                agent_id=ref.run_id,
                task_name=name,
                message=settings.activity_message_complete,
                percentage=100,
                result=outcome.result,
                result_type=outcome.result_type,
            )
            # Named after the last step, so that `get_result` returns its return type.
            stored = Outcome(
                Ending.COMPLETE,
                step.task_name,
                result=outcome.result,
                result_type=outcome.result_type,
            )
            return [Append(finished), Append(end), Store(ref.run_id, stored)]
        if outcome.status is Ending.CANCELED:
            canceled = _end_run(ref, name, Ending.CANCELED, f"canceled at {where}", settings)
            return [Append(finished), *canceled]
        error = f"{where} {outcome.status}: {outcome.error}"
        return [Append(finished), *_end_run(ref, name, Ending.ERROR, error, settings)]

    def _next_step(
        self, step: Step, run_id: UUID, queued: TaskQueued, output: msgspec.Raw, settings: Settings
    ) -> TaskQueued:
        """The next step's task with `output` as its input; raises `ContextError` when the
        output makes a context larger than `ax.enqueue` accepts, or does not validate as the
        next step's inputs."""
        nxt = self.steps[step.index + 1]
        queue = queued.queue or self.pool.queue_name
        name = str(self.name)
        event = _step_queued(nxt, run_id, name, queue, queued, bytes(output), settings)
        size = len(event.context)
        if size > settings.max_context_bytes:
            raise ContextError(
                f"its output makes the context of step {nxt.index} ({nxt.method_name}) "
                f"{size:,} bytes, above the {settings.max_context_bytes:,}-byte limit "
                "(AGENTEXEC_MAX_CONTEXT_BYTES); return a reference to large data stored "
                "elsewhere, or raise AGENTEXEC_MAX_CONTEXT_BYTES."
            )
        try:
            nxt.arguments(msgspec.json.decode(output))
        except (TypeError, ValueError) as e:
            raise ContextError(
                f"its output is not a valid input of step {nxt.index} ({nxt.method_name}): {e}"
            ) from e
        return event


_pipelines: dict[str, Pipeline] = {}
_step_ref = msgspec.json.Decoder(_StepRef)


def advance(queued: TaskQueued, outcome: Outcome) -> Sequence[Write]:
    """The transition of every step task: queue the next step, or end the run.

    Whatever stops the run going on past this step (its output cannot be the next step's
    context, a bug) ends the run ERROR, naming the step and the cause: a run is never left
    open without a step to continue it.
    """
    ref = _step_ref.decode(queued.context)
    pipeline = _pipelines.get(ref.pipeline)
    settings = current().settings  # the worker's (it runs the transition)
    try:
        if pipeline is None:
            raise LookupError(f"pipeline {ref.pipeline!r} is not defined in this process")
        return pipeline._transition(ref, queued, outcome, settings)
    except ContextError as e:
        cause = str(e)
        logger.warning("pipeline %s, run %s: %s", ref.pipeline, ref.run_id, cause)
    except Exception as e:
        cause = describe_exception(e)
        logger.error(
            "pipeline %s, run %s: its transition raised\n%s",
            ref.pipeline,
            ref.run_id,
            describe_traceback(e),
        )
    return _cannot_go_on(pipeline, ref, queued, outcome, cause, settings)


def _cannot_go_on(
    pipeline: Pipeline | None,
    ref: _StepRef,
    queued: TaskQueued,
    outcome: Outcome,
    cause: str,
    settings: Settings,
) -> list[Write]:
    """End the run ERROR after step `ref.step`, whose own outcome stands."""
    method = queued.task_name.rpartition(".")[2]
    error = f"step {ref.step} ({method}) {outcome.status}, but the run cannot go on: {cause}"
    writes: list[Write] = []
    if pipeline is not None:
        count = len(pipeline.steps)
        finished = PipelineStepFinished(
            agent_id=ref.run_id,
            task_name=ref.pipeline,
            step=ref.step,
            steps=count,
            step_agent_id=queued.agent_id,
            outcome=outcome.status,
            message=f"Step {ref.step + 1}/{count} ({pipeline.steps[ref.step].description}) "
            f"{outcome.status}; the run cannot go on",
        )
        writes.append(Append(finished))
    return [*writes, *_end_run(ref, ref.pipeline, Ending.ERROR, error, settings)]


def _end_run(
    ref: _StepRef, name: str, status: Ending, error: str, settings: Settings
) -> list[Write]:
    """End the run ERROR or CANCELED with `error`: its terminal event and stored outcome."""
    end: TaskFailed | TaskCanceled
    if status is Ending.CANCELED:
        end = TaskCanceled(agent_id=ref.run_id, task_name=name, message=f"Run {error}.")
    else:
        message = settings.activity_message_error.replace("{error}", error)
        end = TaskFailed(agent_id=ref.run_id, task_name=name, message=message, error=error)
    return [Append(end), Store(ref.run_id, Outcome(status, name, error=error))]


def _step_queued(
    step: Step,
    run_id: UUID,
    name: str,
    queue: str,
    parent: TaskQueued,
    data: bytes,
    settings: Settings,
) -> TaskQueued:
    context = {"run_id": run_id, "pipeline": name, "step": step.index, "input": msgspec.Raw(data)}
    partitions = current().partitions  # a run's steps live in its partition
    return TaskQueued(
        agent_id=partitions.new_id(partitions.of(run_id)),
        task_name=step.task_name,
        queue=queue,
        priority=parent.priority,
        context=msgspec.Raw(msgspec.json.encode(context)),
        parent_id=run_id,
        message=settings.activity_message_create,
        metadata=parent.metadata,
    )


def _handler(cls: type[PipelineBase], pipeline: Pipeline, step: Step) -> Callable[..., Any]:
    """The step's task handler, reachable by reference as `cls._agentexec_step_N`, so that it
    pickles to worker processes like any module-level handler."""

    async def handler(agent_id: UUID, context: StepContext) -> Any:
        return await pipeline._run_step(step, agent_id, context)

    attribute = f"_agentexec_step_{step.index}"
    handler.__name__ = attribute
    handler.__qualname__ = f"{cls.__qualname__}.{attribute}"
    handler.__module__ = cls.__module__
    handler.__annotations__ = {"agent_id": UUID, "context": StepContext}
    if step.return_type is not None:
        handler.__annotations__["return"] = step.return_type
    setattr(cls, attribute, staticmethod(handler))
    return handler


def _check_steps(cls: type[PipelineBase], name: str) -> tuple[Step, ...]:
    marked = [
        (getattr(value, _MARK), attribute, value)
        for attribute, value in vars(cls).items()
        if hasattr(value, _MARK)
    ]
    if not marked:
        raise TaskDefinitionError(
            f"class {cls.__qualname__}: a pipeline needs at least one @pipeline.step method."
        )
    marked.sort(key=lambda m: m[0].order)
    orders = [options.order for options, _, _ in marked]
    if len(set(orders)) != len(orders):
        raise TaskDefinitionError(
            f"class {cls.__qualname__}: step orders are {orders}; give each step an order of "
            "its own (they need not be contiguous, e.g. 10, 20, 30)."
        )
    steps: list[Step] = []
    for index, (options, attribute, method) in enumerate(marked):
        step = _check_method(cls, name, index, options, attribute, method)
        if steps:
            _check_link(cls, steps[-1], step)
        elif len(step.parameters) != 1 or not _is_model(step.parameters[0][1]):
            raise TaskDefinitionError(
                f"{cls.__qualname__}.{attribute}: the first step takes the run's context, "
                "one parameter annotated with a Pydantic model, e.g. "
                "`async def gather(self, context: InputContext)`."
            )
        steps.append(step)
    return tuple(steps)


def _check_method(
    cls: type[PipelineBase], name: str, index: int, options: _Options, attribute: str, method: Any
) -> Step:
    where = f"{cls.__qualname__}.{attribute}"
    if not inspect.isfunction(method):
        raise TaskDefinitionError(f"{where}: @pipeline.step decorates plain methods only.")
    parameters = list(inspect.signature(method).parameters.values())[1:]
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        raise TaskDefinitionError(
            f"{where}: a step takes plain positional parameters (no *args, **kwargs or "
            "keyword-only ones)."
        )
    try:
        hints = typing.get_type_hints(method)
    except Exception as e:
        raise TaskDefinitionError(f"{where}: its annotations cannot be resolved: {e}") from e
    missing = [p.name for p in parameters if p.name not in hints]
    if missing:
        raise TaskDefinitionError(
            f"{where}: parameter(s) {', '.join(missing)} have no annotation; annotate each "
            "input with its type (a step's inputs are validated into it)."
        )
    adapters = []
    for p in parameters:
        try:
            adapters.append(TypeAdapter(hints[p.name]))
        except Exception as e:
            raise TaskDefinitionError(
                f"{where}: parameter {p.name!r} is annotated {hints[p.name]!r}, which Pydantic "
                f"cannot validate ({e})."
            ) from e
    return Step(
        index=index,
        order=options.order,
        description=options.description or attribute.strip("_").replace("_", " "),
        method_name=attribute,
        task_name=f"{name}.{attribute}",
        method=method,
        parameters=tuple((p.name, hints[p.name]) for p in parameters),
        return_type=hints.get("return"),
        options=options,
        adapters=tuple(adapters),
    )


def _check_link(cls: type[PipelineBase], before: Step, after: Step) -> None:
    where = f"{cls.__qualname__}.{after.method_name} (step {after.index})"
    output = before.return_type
    names = ", ".join(n for n, _ in after.parameters)
    if not after.parameters:
        raise TaskDefinitionError(
            f"{where}: takes no input; a step after the first takes the previous step's output."
        )
    if output is None or output is type(None):
        raise TaskDefinitionError(
            f"{cls.__qualname__}.{before.method_name} (step {before.index}): annotate its "
            f"return type; its output is the input of step {after.index} ({names})."
        )
    if len(after.parameters) == 1:
        _check_type(where, after.parameters[0], output)
        return
    items = typing.get_args(output)
    if (
        typing.get_origin(output) is not tuple
        or len(items) != len(after.parameters)
        or Ellipsis in items
    ):
        raise TaskDefinitionError(
            f"{where}: takes {len(after.parameters)} inputs ({names}), so step {before.index} "
            f"({before.method_name}) must return a tuple of {len(after.parameters)} values, "
            f"e.g. `-> tuple[A, B]`; its return annotation is {output!r}."
        )
    for parameter, item in zip(after.parameters, items, strict=True):
        _check_type(where, parameter, item)


def _check_type(where: str, parameter: tuple[str, Any], output: Any) -> None:
    name, annotation = parameter
    if annotation is Any or output == annotation:
        return
    if (_is_mapping(output) and _is_model(annotation)) or (
        _is_model(output) and _is_mapping(annotation)
    ):
        return  # a JSON object either way: its fields are validated when the step is queued
    if isinstance(output, type) and isinstance(annotation, type):
        if not issubclass(output, annotation):
            raise TaskDefinitionError(
                f"{where}: parameter {name!r} is annotated {annotation.__qualname__}, but the "
                f"previous step provides a {output.__qualname__} there; make them match."
            )


def _is_mapping(annotation: Any) -> bool:
    """`dict`, `dict[str, X]`, `Mapping`, a TypedDict...: anything JSON carries as an object."""
    origin = typing.get_origin(annotation) or annotation
    return (isinstance(origin, type) and issubclass(origin, Mapping)) or typing.is_typeddict(origin)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
