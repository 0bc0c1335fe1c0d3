"""`AgentContext`: the typed state an application shares with its agents' tools and prompts.

The SDK hands the run's context to every tool (`ctx.context`), dynamic instruction and
guardrail. It is a Pydantic model so that it crosses the process boundary of a task: the
enqueuer sends its JSON, the worker rebuilds the same type, and the finished run returns it
with what the tools added. Process-local resources (a database connection) are excluded from
the JSON: the worker's copy has None there and opens its own.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentexec.errors import ContextError

with warnings.catch_warnings():
    # `schema` is the seed's field name; it shadows BaseModel's deprecated `schema()` method.
    warnings.simplefilter("ignore", UserWarning)

    class AgentContext(BaseModel):
        """State shared by the agents of a workflow and their tools.

        Subclass it for a domain (`class ShopContext(ax.AgentContext): basket: list[str] = []`),
        with or without the seed's `@dataclass` on top (the subclass stays a Pydantic model);
        the subclass is what the worker rebuilds. `database_connector` is never serialised.
        """

        model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=False)

        database_connector: Any = Field(default=None, exclude=True)
        """A process-local handle for tools (excluded from the JSON sent to workers)."""
        schema: str = ""  # type: ignore[assignment]
        """Text describing the data the agents work on, for dynamic instructions."""
        user_query: str = ""
        """The request being served: the input of `AgentOrchestrator.run_agent` by default."""
        filters: dict[str, Any] = Field(default_factory=dict)
        query_results: list[Any] = Field(default_factory=list)
        discovered: dict[str, list[Any]] = Field(default_factory=dict)
        """What tools found, by key (`add_discovered_item`)."""
        metadata: dict[str, Any] = Field(default_factory=dict)

        @classmethod
        def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
            # The seed extends its context with `@dataclass class MyAppContext(AgentContext)`.
            # A stdlib `@dataclass` replaces only methods the class does not define itself, so
            # pinning the inherited ones here keeps the subclass a working Pydantic model (with
            # every field, `dataclasses.field(default_factory=...)` included).
            super().__pydantic_init_subclass__(**kwargs)
            for name in ("__init__", "__repr__", "__eq__"):
                if name not in cls.__dict__:
                    setattr(cls, name, getattr(cls, name))

        def add_discovered_item(self, key: str, item: Any) -> None:
            """Record `item` under `key` (items of one key keep their order)."""
            self.discovered.setdefault(key, []).append(item)

        @property
        def has_data(self) -> bool:
            """Whether any query result or discovered item was recorded."""
            return bool(self.query_results) or any(self.discovered.values())


def type_path(model: type[BaseModel]) -> str:
    """`module:QualName` of a model class, as a worker imports it."""
    return f"{model.__module__}:{model.__qualname__}"


def load_type(path: str, what: str) -> type[BaseModel]:
    """The model class at `path` (`module:QualName`); raises `ContextError` naming it."""
    module, _, name = path.partition(":")
    try:
        value: Any = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as e:
        raise ContextError(
            f"{what}: the context type {path!r} cannot be imported here ({e}); define it at "
            "module level in a module the workers can import."
        ) from e
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise ContextError(f"{what}: {path!r} is not a Pydantic model class.")
    return value
