"""`AgentOrchestrator`: code that runs agents one after another, or picks the next from an
agent's output, each run a child task of the orchestration."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter

from agentexec.errors import ConfigurationError
from agentexec.results import get_result
from agentexec.tasks import RUNNING_TASK, ParentId, running_task

from .context import AgentContext
from .registry import Agents, Guardrail, Stage, caller_module, current_agents
from .runs import AgentOutcome, enqueue_agent

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


def _capturing(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`method` (a workflow: `run` or `execute`), recording its `user_query` argument on the
    orchestrator before it starts."""

    @functools.wraps(method)
    async def workflow(self: AgentOrchestrator, *args: Any, **kwargs: Any) -> Any:
        query = kwargs.get("user_query", args[0] if args else None)
        if isinstance(query, str):
            self.user_query = query
        return await method(self, *args, **kwargs)

    workflow.__dict__["_captures_user_query"] = True
    return workflow


class AgentOrchestrator:
    """Runs registered agents from code (the seed's code orchestration, not SDK handoffs).

    `run_agent(name, session, context)` queues the agent as a task (`ax.enqueue_agent`),
    a child of `parent_id` (default: the task whose handler runs the orchestration, so that
    its runs form a tree under it, see `ax.activity.children`), waits up to `timeout`
    seconds for it, copies what the run left in the shared context back into `context`, and
    returns the agent's output, as its `output_type` when the registry knows the agent.

    `run(user_query, context_data)` runs the agents named in `steps` one after another on one
    session (`sequence`); with no `steps`, the registry's only agent. Subclass it and write
    another workflow in `run` (or `execute`): routing on outputs, loops. Either method's
    `user_query` argument is kept as `self.user_query`, which `setup_context` and `run_agent`
    use when the context does not carry it.
    """

    context_type: type[AgentContext] = AgentContext

    def __init__(
        self,
        agents: Agents | None = None,
        *,
        steps: Sequence[str] | None = None,
        queue_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        parent_id: ParentId = RUNNING_TASK,
    ) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"AgentOrchestrator(timeout={timeout!r}): use seconds > 0.")
        if isinstance(steps, str) or not all(isinstance(n, str) and n for n in steps or ()):
            raise ConfigurationError(
                f"AgentOrchestrator(steps={steps!r}): pass a list of registered agent names, "
                "in the order they run."
            )
        self.agents = agents or current_agents()
        self.steps = None if steps is None else tuple(steps)
        self.queue_name = queue_name
        self.timeout = timeout
        self.parent_id = parent_id
        self.user_query = ""
        """The request of the workflow running (`run`'s or `execute`'s `user_query`)."""
        self.outcomes: list[AgentOutcome] = []
        """The outcome of every run of this orchestrator, in order."""
        self._asked: set[str] = set()
        """The sessions this orchestrator already sent the user query to."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("run", "execute"):
            method = cls.__dict__.get(name)
            if inspect.iscoroutinefunction(method) and not getattr(
                method, "_captures_user_query", False
            ):
                setattr(cls, name, _capturing(method))

    def register_guardrail(self, name: str, check: Guardrail, *, stage: Stage = "input") -> None:
        """Register a guardrail in the orchestrator's registry (`Agents.register_guardrail`);
        agents name it in their `guardrails`."""
        self.agents.register_guardrail(name, check, stage=stage)
        self.agents.modules.add(caller_module(1))

    def setup_session(self, session_id: str | None = None) -> Any:
        """A session for a new conversation (`session_id` default: a new UUID), opened with the
        registry's session factory."""
        return self.agents.open_session(session_id or str(uuid.uuid4()))

    def setup_context(self, **data: Any) -> AgentContext:
        """The shared context for a workflow: `context_type(**data)`, its `user_query` the
        workflow's when `data` has none."""
        if self.user_query and "user_query" in self.context_type.model_fields:
            data.setdefault("user_query", self.user_query)
        return self.context_type(**data)

    async def run(self, user_query: str, context_data: dict[str, Any]) -> dict[str, Any]:
        """Run the agents of `steps` in order on a new session, with a context made of
        `context_data` (`setup_context`), for `user_query`; returns `{"success": True,
        "result": <the last agent's output>, "outputs": {name: output, ...}}`. Raises
        `ConfigurationError` when there are no `steps` and the registry does not hold
        exactly one agent, and what `run_agent` raises."""
        self.user_query = user_query
        steps = self.steps
        if steps is None:
            names = self.agents.agents.names()
            if len(names) != 1:
                raise ConfigurationError(
                    f"{type(self).__name__}.run: no steps, and the registry holds "
                    f"{len(names)} agents ({', '.join(names) or 'none'}); pass "
                    "AgentOrchestrator(steps=[...names in order]), or subclass it and write "
                    "the workflow in run()."
                )
            steps = tuple(names)
        session = self.setup_session()
        context = self.setup_context(**context_data)
        outputs = await self.sequence(steps, session, context)
        return {
            "success": True,
            "result": outputs[-1],
            "outputs": dict(zip(steps, outputs, strict=True)),
        }

    async def sequence(
        self, names: Sequence[str], session: Any = None, context: BaseModel | None = None
    ) -> list[Any]:
        """Run the agents `names` one after another (`run_agent`), each on the same `session`
        and `context`, so that each sees what the earlier ones said and found; returns their
        outputs in order."""
        if isinstance(names, str) or not names:
            raise ConfigurationError(
                f"sequence({names!r}, ...): pass a non-empty list of agent names."
            )
        return [await self.run_agent(name, session, context) for name in names]

    async def run_agent(
        self,
        name: str,
        session: Any = None,
        context: BaseModel | None = None,
        *,
        input: str | list[dict[str, Any]] | None = None,
        max_turns: int | None = None,
    ) -> Any:
        """Run agent `name` as a child task and return its output.

        `input` defaults to `context.user_query` (else the workflow's `self.user_query`,
        which is then set on the context) for the first run on `session` (or for every
        run without one); later runs on the same session continue its conversation with no
        new input (`[]`), as the SDK prepends the session's items to each run's input, so
        the user's message is in the session once, not once per run. Pass `input` to add a
        message explicitly. `session` is any SDK `Session` with a `session_id`: the worker
        reopens it by id (`Agents.session_factory`). Raises
        `AgentDefinitionError` for an agent the registry does not know, `TaskFailedError`
        when the run fails, and `TimeoutError` after `timeout` seconds.
        """
        definition = self.agents.agents.get(name) if self.agents.agents.names() else None
        session_id = None if session is None else getattr(session, "session_id", None)
        if session is not None and not isinstance(session_id, str):
            raise ConfigurationError(
                f"run_agent({name!r}, ...): the session {session!r} has no session_id; pass "
                "an SDK Session (such as ax.AgentSession) or None."
            )
        if input is None and session_id is not None and session_id in self._asked:
            input = []  # the session holds the user's message: continue its conversation
        if input is None:
            input = getattr(context, "user_query", "") or self.user_query
            if input and context is not None and getattr(context, "user_query", None) == "":
                context.user_query = input  # type: ignore[attr-defined]
            if not input:
                raise ConfigurationError(
                    f"run_agent({name!r}, ...): no input; pass input=... or set the context's "
                    "user_query."
                )
        task = await enqueue_agent(
            name,
            input,
            context=context,
            session_id=session_id,
            max_turns=max_turns,
            queue_name=self.queue_name,
            parent_id=self.parent_id,
        )
        if session_id is not None:
            self._asked.add(session_id)
        run = running_task()
        logger.info(
            "orchestration %s: agent %r runs as task %s",
            run.agent_id if run is not None else "-",
            name,
            task.agent_id,
        )
        value = await get_result(task, timeout=self.timeout)
        outcome = value if isinstance(value, AgentOutcome) else AgentOutcome.model_validate(value)
        self.outcomes.append(outcome)
        if context is not None and outcome.context is not None:
            returned = type(context).model_validate(outcome.context)
            for field in type(context).model_fields:
                if field in outcome.context:
                    setattr(context, field, getattr(returned, field))
        if definition is not None and definition.output_type is not None:
            return TypeAdapter(definition.output_type).validate_python(outcome.output)
        return outcome.output
