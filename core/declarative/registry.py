"""`Agents`: the registries of one application (agents, tools, guardrails), and the default.

Each `Agents` holds its own names: two applications (or two tests) never see each other's.
`ax.register_agent`, `ax.register_tool` and `ax.register_guardrail` act on the current
registry: the process default, or the one `ax.use_agents(app)` makes current in a context.
Worker processes find a registry by importing the modules that filled it (see
`agentexec.declarative.task`), so define a registry, and register into it, at module level.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import inspect
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from agentexec.errors import AgentDefinitionError, ConfigurationError
from agentexec.limits import check_name

from .definition import AgentDefinition

logger = logging.getLogger(__name__)

T = TypeVar("T")
Stage = Literal["input", "output"]
Guardrail = Callable[..., Any]
"""`(ctx, value) -> (ok, message)`, a bool, or an SDK `GuardrailFunctionOutput`; sync or
async. `ctx` is the SDK's run context wrapper (`ctx.context` is the run's context), `value`
the text of the run's latest user message (input guardrails) or the agent's final output."""
SessionFactory = Callable[[str], Any]


@dataclass(frozen=True)
class ToolEntry:
    """A registered tool: the SDK tool and what the registry knows of it."""

    name: str
    tool: Any
    """The SDK `FunctionTool` (or any SDK tool) given to agents."""
    description: str = ""
    category: str = ""
    parameters_description: str = ""
    returns_description: str = ""
    module: str = field(default="", compare=False)


@dataclass(frozen=True)
class GuardrailEntry:
    """A registered guardrail: `check` runs on a run's input or on its final output."""

    name: str
    check: Guardrail
    stage: Stage = "input"
    description: str = ""


class _Names(Generic[T]):
    """Entries by name, in registration order."""

    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}

    def get(self, name: str) -> T:
        """The entry named `name`; raises `AgentDefinitionError` naming the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise AgentDefinitionError(
                f"no {self.kind} named {name!r}; known {self.kind}s: {self._known()}."
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _known(self) -> str:
        return ", ".join(sorted(self._entries)) or "none"

    def _add(self, name: str, entry: T, same: bool) -> None:
        if name in self._entries and not same:
            raise AgentDefinitionError(
                f"a {self.kind} named {name!r} is registered already; pick another name "
                "or register into another ax.Agents()."
            )
        self._entries[name] = entry


class AgentRegistry(_Names[AgentDefinition]):
    kind = "agent"

    def list(self) -> list[AgentDefinition]:
        """The registered definitions, in registration order."""
        return list(self._entries.values())


class ToolRegistry(_Names[ToolEntry]):
    kind = "tool"

    def list(self, category: str | None = None) -> list[ToolEntry]:
        """The registered tools, of `category` when given, in registration order."""
        return [t for t in self._entries.values() if category is None or t.category == category]

    def get_tool_functions(self, names: Sequence[str]) -> builtins.list[Any]:
        """The SDK tools named `names` (the seed's spelling)."""
        return [self.get(n).tool for n in names]


class GuardrailRegistry(_Names[GuardrailEntry]):
    kind = "guardrail"

    def list(self, stage: Stage | None = None) -> list[GuardrailEntry]:
        return [g for g in self._entries.values() if stage is None or g.stage == stage]


class Agents:
    """The agents, tools and guardrails of one application.

    `session_factory(session_id)` opens the SDK `Session` a task runs with when it is given
    a session id (default: `ax.AgentSession` when available); a worker calls it in its own
    process, so it must open a store every worker reaches.

    `connect()` returns the process-local `database_connector` (a connection, a client) that
    a worker puts into the context of each agent task it runs: the enqueuer's is never sent.
    Called once per worker process, on its first agent task that needs it.
    """

    def __init__(
        self,
        *,
        session_factory: SessionFactory | None = None,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        if connect is not None and not callable(connect):
            raise ConfigurationError(
                f"ax.Agents(connect={connect!r}): pass a function of no arguments returning "
                "the worker's database_connector, or None."
            )
        self.agents = AgentRegistry()
        self.tools = ToolRegistry()
        self.guardrails = GuardrailRegistry()
        self.session_factory = session_factory
        self.connect = connect
        self._connector: Any = None
        self.modules: set[str] = set()
        """Modules that registered something here: a worker imports them to refill it."""
        self.home = caller_module(1)

    def __repr__(self) -> str:
        return (
            f"<Agents from {self.home}: {len(self.agents)} agent(s), {len(self.tools)} tool(s), "
            f"{len(self.guardrails)} guardrail(s)>"
        )

    def register_agent(self, definition: AgentDefinition) -> AgentDefinition:
        """Register `definition`; returns it. Raises `AgentDefinitionError` when it names a
        tool, guardrail or handoff agent this registry does not have (register those first),
        or its name is taken by another definition."""
        if not isinstance(definition, AgentDefinition):
            raise AgentDefinitionError(
                f"register_agent({definition!r}): pass an ax.AgentDefinition(...)."
            )
        for kind, names, registry in (
            ("tool", definition.tools, self.tools),
            ("guardrail", definition.guardrails, self.guardrails),
            ("handoff agent", definition.handoffs, self.agents),
        ):
            unknown = [n for n in names if n not in registry]
            if unknown:
                raise AgentDefinitionError(
                    f"register_agent({definition.name!r}): unknown {kind} name(s) "
                    f"{', '.join(map(repr, unknown))}; known: {registry._known()}. Register "
                    f"the {kind} first, or fix the name."
                )
        if definition.name in definition.handoffs:
            raise AgentDefinitionError(
                f"register_agent({definition.name!r}): an agent cannot hand off to itself."
            )
        existing = self.agents._entries.get(definition.name)
        self.agents._add(definition.name, definition, existing == definition)
        object.__setattr__(definition, "_agents", self)
        self.modules.add(caller_module(1))
        logger.info("agent %r registered (%d tool(s))", definition.name, len(definition.tools))
        return definition

    def register_tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        category: str = "",
        parameters_description: str = "",
        returns_description: str = "",
    ) -> Callable[[T], T]:
        """Decorator registering an SDK tool (`@function_tool` below it) under `name`
        (default: the tool's own name); a plain function is made a `function_tool` first.
        Returns the tool, renamed and re-described when `name`/`description` are given.
        Raises `AgentDefinitionError` for a tool whose first parameter is named `ctx` (or
        `context`) with no type or `Any`: type it `RunContextWrapper[...]` to get the run
        context."""

        def decorate(tool: T) -> T:
            module = caller_module(1)
            sdk_tool: Any = tool
            _check_context_parameter(name, sdk_tool)
            if inspect.isroutine(sdk_tool):
                from agents import function_tool

                sdk_tool = function_tool(sdk_tool)
            elif not isinstance(getattr(sdk_tool, "name", None), str):
                raise AgentDefinitionError(
                    f"register_tool({name!r}): {tool!r} is not a tool; decorate an "
                    "@function_tool (or any SDK tool), or a function."
                )
            tool_name: str = name or sdk_tool.name
            try:
                check_name(tool_name, "tool name")
            except ConfigurationError as e:
                raise AgentDefinitionError(f"register_tool(...): {e}") from None
            changes = {}
            if tool_name != sdk_tool.name:
                changes["name"] = tool_name
            if description and description != getattr(sdk_tool, "description", description):
                changes["description"] = description
            if changes:
                try:
                    sdk_tool = dataclasses.replace(sdk_tool, **changes)
                except TypeError as e:
                    raise AgentDefinitionError(
                        f"register_tool({name!r}): the {type(sdk_tool).__name__} "
                        f"{sdk_tool.name!r} cannot be renamed or re-described ({e}); register "
                        "it under its own name."
                    ) from None
            entry = ToolEntry(
                name=tool_name,
                tool=sdk_tool,
                description=description or getattr(sdk_tool, "description", "") or "",
                category=category,
                parameters_description=parameters_description,
                returns_description=returns_description,
                module=module,
            )
            existing = self.tools._entries.get(tool_name)
            self.tools._add(tool_name, entry, existing is not None and existing.module == module)
            self.modules.add(module)
            result: T = sdk_tool
            return result

        return decorate

    def register_guardrail(
        self, name: str, check: Guardrail, *, stage: Stage = "input", description: str = ""
    ) -> GuardrailEntry:
        """Register `check` as guardrail `name`, run on a run's input (`stage="input"`, before
        the model is called) or on the agent's final output (`"output"`). A check returning
        `(False, message)` (or False) stops the run: the task fails with
        `GuardrailTrippedError` and is not retried."""
        try:
            check_name(name, "guardrail name")
        except ConfigurationError as e:
            raise AgentDefinitionError(f"register_guardrail(...): {e}") from None
        if not callable(check):
            raise AgentDefinitionError(
                f"register_guardrail({name!r}, {check!r}): pass a function "
                "(ctx, value) -> (ok, message)."
            )
        if stage not in ("input", "output"):
            raise AgentDefinitionError(
                f"register_guardrail({name!r}, ...): stage={stage!r}; use 'input' or 'output'."
            )
        entry = GuardrailEntry(name=name, check=check, stage=stage, description=description)
        self.guardrails._add(name, entry, self.guardrails._entries.get(name) == entry)
        self.modules.add(caller_module(1))
        return entry

    def connector(self) -> Any:
        """This process's `database_connector` (`connect()`, called once), or None."""
        if self._connector is None and self.connect is not None:
            self._connector = self.connect()
        return self._connector

    def open_session(self, session_id: str) -> Any:
        """The SDK session for `session_id`, opened with `session_factory`."""
        if self.session_factory is not None:
            return self.session_factory(session_id)
        import agentexec

        session_type = getattr(agentexec, "AgentSession", None)
        if session_type is None:
            raise ConfigurationError(
                f"a task was given session_id {session_id!r}, but this registry has no "
                "session store; pass ax.Agents(session_factory=lambda session_id: ...)."
            )
        return session_type(session_id)

    def __reduce__(self) -> tuple[Any, ...]:
        # Found again in a worker process by name: the modules that filled it are imported.
        return (_located, (*self.locate(), tuple(sorted(self.modules))))

    def locate(self) -> tuple[str, str]:
        """(module, attribute) where this registry is defined at module level; raises
        `ConfigurationError` when it is not (workers could not find it)."""
        if self is _DEFAULT:
            return (__name__, "_DEFAULT")
        module = sys.modules.get(self.home)
        for attribute, value in vars(module or object()).items():
            if value is self:
                return (self.home, attribute)
        raise ConfigurationError(
            f"the ax.Agents() made in {self.home} is not a module-level name there; worker "
            "processes import modules to find it: assign it at module level "
            "(app = ax.Agents()) or use the default registry."
        )


_CONTEXT_NAMES = ("ctx", "context", "wrapper", "run_context")


def _check_context_parameter(name: str | None, tool: Any) -> None:
    """Refuse a tool whose first parameter is meant as the run context but has no type (or
    `Any`): the SDK passes the context only to a parameter typed `RunContextWrapper` (or
    `ToolContext`), and would ask the model to supply this one instead."""
    untyped = ""
    if inspect.isroutine(tool):
        parameters = list(inspect.signature(tool).parameters.values())
        first = parameters[0] if parameters else None
        if first is not None and first.name in _CONTEXT_NAMES:
            if first.annotation in (inspect.Parameter.empty, Any, "Any"):
                untyped = first.name
    else:
        properties = getattr(tool, "params_json_schema", None) or {}
        properties = properties.get("properties", {}) if isinstance(properties, dict) else {}
        for key, schema in list(properties.items())[:1]:
            typed = isinstance(schema, dict) and any(
                k in schema for k in ("type", "$ref", "anyOf", "allOf", "oneOf", "enum", "const")
            )
            if key in _CONTEXT_NAMES and not typed:
                untyped = key
    if untyped:
        label = name or getattr(tool, "name", None) or getattr(tool, "__name__", repr(tool))
        raise AgentDefinitionError(
            f"register_tool({label!r}): the parameter {untyped!r} has no type (or Any), so the "
            "Agents SDK would ask the model for it instead of passing the run context; annotate "
            f"it `{untyped}: RunContextWrapper[AgentContext]` (from agents import "
            "RunContextWrapper), or remove it if the tool does not use the context."
        )


def _located(module: str, attribute: str, modules: tuple[str, ...]) -> Agents:
    import importlib

    for name in modules:
        importlib.import_module(name)
    value = getattr(importlib.import_module(module), attribute)
    if not isinstance(value, Agents):
        raise ConfigurationError(f"{module}.{attribute} is not an ax.Agents registry.")
    return value


def caller_module(depth: int) -> str:
    """The `__name__` of the module whose code called, `depth` frames above the caller."""
    frame = inspect.currentframe()
    for _ in range(depth + 1):
        if frame is None:
            break
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "__main__") if frame is not None else "__main__"
    return str(name)


_DEFAULT = Agents()
_current: ContextVar[Agents] = ContextVar("agentexec_agents", default=_DEFAULT)


def current_agents() -> Agents:
    """The registry `ax.register_*` act on: the one `use_agents` made current, else the
    process default."""
    return _current.get()


@contextlib.contextmanager
def use_agents(agents: Agents) -> Iterator[Agents]:
    """Make `agents` current in this context (`with ax.use_agents(app): ...`)."""
    token = _current.set(agents)
    try:
        yield agents
    finally:
        _current.reset(token)


def register_agent(definition: AgentDefinition) -> AgentDefinition:
    """Register `definition` in the current registry; see `Agents.register_agent`."""
    agents = current_agents()
    result = agents.register_agent(definition)
    agents.modules.add(caller_module(1))
    return result


def register_tool(
    name: str | None = None,
    *,
    description: str | None = None,
    category: str = "",
    parameters_description: str = "",
    returns_description: str = "",
) -> Callable[[T], T]:
    """Decorator registering a tool in the current registry; see `Agents.register_tool`."""
    register = current_agents().register_tool(
        name,
        description=description,
        category=category,
        parameters_description=parameters_description,
        returns_description=returns_description,
    )
    return register


def register_guardrail(
    name: str, check: Guardrail, *, stage: Stage = "input", description: str = ""
) -> GuardrailEntry:
    """Register a guardrail in the current registry; see `Agents.register_guardrail`."""
    agents = current_agents()
    entry = agents.register_guardrail(name, check, stage=stage, description=description)
    agents.modules.add(caller_module(1))
    return entry


class _Current:
    """`ax.agents`, `ax.tools`, `ax.guardrails`: the current registry's, at each call."""

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(current_agents(), self._kind), name)

    def __contains__(self, name: object) -> bool:
        return name in getattr(current_agents(), self._kind)

    def __repr__(self) -> str:
        return f"<the current registry's {self._kind}>"


agents: Any = _Current("agents")
tools: Any = _Current("tools")
guardrails: Any = _Current("guardrails")
