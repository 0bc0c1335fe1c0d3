"""Task definitions (what `@pool.task` registers) and `Task`, the handle `enqueue` returns."""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable
from uuid import UUID

from pydantic import BaseModel, TypeAdapter

from .errors import InvalidAgentIdError, InvalidNameError, TaskDefinitionError
from .events import Priority
from .limits import check_name

if TYPE_CHECKING:
    from .transitions import Transition


@dataclass(frozen=True)
class TaskLease:
    """The queue entry a worker holds while it runs a task: the handler's own events are
    appended only while the worker still holds it (see `agentexec.activity.append`)."""

    stream: str
    entry_id: bytes
    group: str
    consumer: str


@dataclass(frozen=True)
class RunningTask:
    """The task whose handler runs in this context (the worker marks it around each call)."""

    agent_id: UUID
    task_name: str = ""
    attempt: int = 1
    lease: TaskLease | None = None
    """Set when a worker runs it; None when a task is only marked, as by a test."""
    reported_error: list[tuple[str, str]] = field(default_factory=list, compare=False)
    """(message, error) of the handler's own `ax.activity.error()`: the worker ends the task
    with it when the handler returns (see `agentexec.activity.error`)."""


_running: ContextVar[RunningTask | None] = ContextVar("agentexec_running_task", default=None)


def running_task() -> RunningTask | None:
    """The task whose handler is running in this context, if any."""
    return _running.get()


def own_task(agent_id: UUID | str) -> RunningTask | None:
    """The task running in this context when it is `agent_id`'s: its handler's appends about
    it are fenced by its lease (see `agentexec.eventlog.EventLog`)."""
    run = _running.get()
    return run if run is not None and str(run.agent_id) == str(agent_id) else None


def set_running(task: RunningTask) -> Token[RunningTask | None]:
    return _running.set(task)


def reset_running(token: Token[RunningTask | None]) -> None:
    _running.reset(token)


class _Parent(enum.Enum):
    RUNNING_TASK = "the running task"

    def __repr__(self) -> str:
        return "RUNNING_TASK"


RUNNING_TASK: Final = _Parent.RUNNING_TASK
"""The default `parent_id` of `enqueue`, `Pipeline.enqueue` and `Tracker.on_complete`: the
task whose handler makes the call, if any (else no parent)."""

ParentId = UUID | str | None | Literal[_Parent.RUNNING_TASK]


def parent_of(parent_id: ParentId, what: str) -> tuple[UUID | None, bool]:
    """The parent a new task records, and whether it was named explicitly (then it is worth
    checking that it exists: the running task's own id needs no check). Raises
    `InvalidAgentIdError` for a string that is not a UUID."""
    if parent_id is RUNNING_TASK:
        run = _running.get()
        return (run.agent_id if run is not None else None), False
    if parent_id is None:
        return None, False
    if isinstance(parent_id, UUID):
        parent = parent_id
    else:
        try:
            parent = UUID(str(parent_id))
        except ValueError:
            raise InvalidAgentIdError(
                f"{what}: parent_id {parent_id!r} is not a UUID; pass the agent_id of the "
                "parent task, or parent_id=None for a task without a parent."
            ) from None
    run = _running.get()
    return parent, run is None or run.agent_id != parent


def event_identity(agent_id: UUID | str) -> dict[str, Any]:
    """`task_name` and `attempt` for an event about `agent_id`: those of the task running in
    this context when it is that task, else an empty task name (the append fills it in, see
    `agentexec.eventlog.EventLog`)."""
    run = own_task(agent_id)
    if run is not None:
        return {"task_name": run.task_name, "attempt": run.attempt}
    return {"task_name": ""}


Handler = Callable[..., Any] | Callable[..., Awaitable[Any]]
"""`(agent_id, context)`, sync or async; either parameter may be keyword-only (see
`TaskDefinition.from_handler`)."""

_ROLES = ("agent_id", "context")


@dataclass(frozen=True)
class Task:
    """A queued task. `agent_id` identifies it everywhere: activity, results, events."""

    agent_id: UUID
    task_name: str
    queue_name: str
    priority: Priority = Priority.LOW
    event_id: str = ""
    """The stream id of its `task.queued` event."""


@dataclass(frozen=True)
class TaskDefinition:
    """A handler registered under a task name on a queue."""

    name: str
    handler: Handler
    context_type: type[BaseModel]
    queue_name: str
    is_async: bool
    return_type: Any = None
    """The handler's return annotation, or None when it has none."""
    max_retries: int | None = None
    """Retries after the first attempt; None means `AGENTEXEC_MAX_TASK_RETRIES`."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Exceptions that are retried; any other fails the task at once."""
    timeout: float | None = None
    """Seconds the handler may run before it is stopped (a `TimeoutError` failure)."""
    transition: Transition | None = None
    """Writes committed with the task's final outcome (see `agentexec.transitions`)."""
    lock_key: str | None = None
    """Template of the task's lock key (`"{customer_id}"`), formatted with its context's
    fields: tasks with the same key run one at a time (see `agentexec.locks`)."""
    keywords: frozenset[str] = frozenset()
    """The roles (`agent_id`, `context`) the handler takes as keyword-only parameters."""
    _adapter: TypeAdapter[Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_handler(
        cls,
        name: str,
        handler: Handler,
        queue_name: str,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        transition: Transition | None = None,
        lock_key: str | None = None,
    ) -> TaskDefinition:
        """Check the handler's shape: `(agent_id: UUID, context: SomeModel)`, sync or async.

        Either parameter may be keyword-only, as in agentexec 0.3.0's
        `(*, agent_id: UUID, context: SomeModel)`: a keyword-only parameter is passed by its
        name, which must then be `agent_id` or `context`; positional ones take the other
        roles in order (agent id first).
        """
        shown = f"{name[:40]!r}..." if isinstance(name, str) and len(name) > 40 else repr(name)
        where = f"@pool.task({shown}) on {getattr(handler, '__qualname__', handler)!r}"
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise TaskDefinitionError(
                f"{where}: max_retries={max_retries!r}; use a whole number >= 0."
            )
        if not isinstance(retry_on, tuple) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in retry_on
        ):
            raise TaskDefinitionError(
                f"{where}: retry_on={retry_on!r}; use a tuple of exception classes, "
                "e.g. (TimeoutError, ConnectionError)."
            )
        if timeout is not None and not timeout > 0:
            raise TaskDefinitionError(f"{where}: timeout={timeout!r}; use seconds > 0 or None.")
        if not callable(handler):
            raise TaskDefinitionError(f"{where}: the decorated object is not callable.")
        if not name or not isinstance(name, str):
            raise TaskDefinitionError(f"{where}: the task name must be a non-empty string.")
        try:
            check_name(name, "task name")
        except InvalidNameError as e:
            raise TaskDefinitionError(f"{where}: {e}") from None
        roles = _bind(where, list(inspect.signature(handler).parameters.values()))
        try:
            hints = typing.get_type_hints(handler)
        except Exception as e:
            raise TaskDefinitionError(f"{where}: its annotations cannot be resolved: {e}") from e
        context_name = roles["context"].name
        context_type = hints.get(context_name)
        if not (isinstance(context_type, type) and issubclass(context_type, BaseModel)):
            raise TaskDefinitionError(
                f"{where}: parameter {context_name!r} is annotated {context_type!r}; "
                "annotate it with the Pydantic model the task receives, e.g. "
                "`context: ResearchContext`."
            )
        agent_name = roles["agent_id"].name
        agent_type = hints.get(agent_name, UUID)
        if agent_type is not UUID:
            raise TaskDefinitionError(
                f"{where}: parameter {agent_name!r} is annotated {agent_type!r}; "
                "annotate it `agent_id: UUID`."
            )
        if lock_key is not None:
            from .locks import check_template

            check_template(lock_key, context_type, where)
        return_type = hints.get("return")
        adapter = None
        if return_type is not None and return_type is not type(None):
            try:
                adapter = TypeAdapter(return_type)
            except Exception as e:
                raise TaskDefinitionError(
                    f"{where}: return annotation {return_type!r} is not a type Pydantic can "
                    f"validate ({e}); return a Pydantic model, dict, list, str, number or None."
                ) from e
        return cls(
            name=name,
            handler=handler,
            context_type=context_type,
            queue_name=queue_name,
            is_async=inspect.iscoroutinefunction(handler),
            return_type=return_type,
            max_retries=max_retries,
            retry_on=retry_on,
            timeout=timeout,
            transition=transition,
            lock_key=lock_key,
            keywords=frozenset(r for r, p in roles.items() if p.kind is p.KEYWORD_ONLY),
            _adapter=adapter,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled to worker processes by reference to the handler; rebuilt (and re-checked) there.
        return (
            TaskDefinition.from_handler,
            (
                self.name,
                self.handler,
                self.queue_name,
                self.max_retries,
                self.retry_on,
                self.timeout,
                self.transition,
                self.lock_key,
            ),
        )

    def invoke(self, agent_id: UUID, context: BaseModel) -> Any:
        """Call the handler with the task's agent id and context, each passed by position or
        by keyword as its parameter is declared; returns what the handler returns (an
        awaitable for an async handler)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for role, value in zip(_ROLES, (agent_id, context), strict=True):
            if role in self.keywords:
                kwargs[role] = value
            else:
                args.append(value)
        return self.handler(*args, **kwargs)

    def load_result(self, value: Any) -> Any:
        """Turn a decoded JSON result back into the handler's return type."""
        if self._adapter is None:
            return value
        return self._adapter.validate_python(value)


def _bind(where: str, params: list[inspect.Parameter]) -> dict[str, inspect.Parameter]:
    """The parameter that takes each role (`agent_id`, `context`): a keyword-only parameter
    takes the role it is named after, positional ones the remaining roles in order."""
    shape = (
        "a handler takes exactly two parameters, `(agent_id: UUID, context: YourContextModel)` "
        "or keyword-only `(*, agent_id: UUID, context: YourContextModel)`"
    )
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or any(p.kind not in (*plain, p.KEYWORD_ONLY) for p in params):
        raise TaskDefinitionError(f"{where}: {shape}.")
    named = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    wrong = [name for name in named if name not in _ROLES]
    if wrong:
        raise TaskDefinitionError(
            f"{where}: keyword-only parameter {wrong[0]!r} is neither `agent_id` nor `context`; "
            f"rename it, since {shape}."
        )
    positional = iter(p for p in params if p.kind in plain)
    return {role: named[role] if role in named else next(positional) for role in _ROLES}


@runtime_checkable
class TaskRegistry(Protocol):
    """Takes task definitions and names the queue they run on: what a pipeline needs of the
    `ax.Pool` that runs its steps, so that core does not import the workers."""

    queue_name: str

    def add(self, definition: TaskDefinition) -> None: ...


_registry: dict[str, list[TaskDefinition]] = {}


def register(definition: TaskDefinition) -> None:
    """Record a definition so that `enqueue` in this process can check contexts against it."""
    _registry.setdefault(definition.name, []).append(definition)


def known(name: str) -> list[TaskDefinition]:
    """The definitions registered under `name` in this process (possibly on several queues)."""
    return _registry.get(name, [])
