"""Tenants: who a task belongs to, so that lists, statistics and feeds can be scoped to one.

A task's tenant is given at enqueue (`ax.enqueue(..., tenant="acme")`, or as
`metadata={"tenant": "acme"}`, the key agentexec 0.3.0 programs filter on) and recorded as
`metadata["tenant"]` of its `task.queued` event, so the read model's metadata column and
filters see it. A task enqueued from inside a handler, a pipeline's steps and a tracker's
fan-in inherit the tenant of the task whose handler queues them, unless given one.

Every event of the task then carries it in `Event.tenant`: the worker serves each attempt
inside `serving(...)`, and `agentexec.events.encode` stamps the tenant of the task being
served on the events about that task (and about its parent, a pipeline run for a step, and
the trackers its handler counts on) that do not carry one. An event recorded elsewhere
about the task (the application's own `ax.activity.update`, `ax.cancel`) gets it when it is
appended, with the task name, from the agent marker (`lua/lib/names.lua`). A feed scoped to
a tenant (see docs/tenants.md) sends only the events that carry it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

__all__ = [
    "KEY",
    "MAX_TENANT_CHARS",
    "Serving",
    "check_tenant",
    "current",
    "resolve",
    "serving",
    "tenant_of",
]

KEY = "tenant"
"""The metadata key that holds a task's tenant."""

MAX_TENANT_CHARS = 128
PATTERN = rf"[A-Za-z0-9_.:@-]{{1,{MAX_TENANT_CHARS}}}"
"""What a tenant may be (as a regular expression)."""
_PATTERN = re.compile(PATTERN)
RULE = f"1 to {MAX_TENANT_CHARS} characters among letters, digits and _ . : @ -"


def check_tenant(value: object, what: str = "tenant") -> str:
    """`value` if it is a usable tenant (`RULE`); else raises ValueError naming it and the
    rule."""
    if isinstance(value, str) and _PATTERN.fullmatch(value):
        return value
    shown = f"{value[:40]!r}..." if isinstance(value, str) and len(value) > 40 else repr(value)
    raise ValueError(
        f"{what} {shown} is not a usable tenant: use {RULE}, e.g. tenant='acme' or tenant='org:42'."
    )


def valid(value: object) -> bool:
    """True for a usable tenant (`check_tenant` would return it)."""
    return isinstance(value, str) and _PATTERN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Serving:
    """The task a worker serves in this context, and its tenant."""

    agent_id: UUID
    parent_id: UUID | None
    tenant: str


_serving: ContextVar[Serving | None] = ContextVar("agentexec_tenant", default=None)


def current() -> str | None:
    """The tenant of the task served in this context (its handler, its worker's appends),
    if it has one."""
    served = _serving.get()
    return None if served is None else served.tenant


def served() -> Serving | None:
    return _serving.get()


@contextlib.contextmanager
def serving(agent_id: UUID, parent_id: UUID | None, tenant: str | None) -> Iterator[None]:
    """Mark the task `agent_id` (of `tenant`) as served in this context: events encoded
    here about it get its tenant, and tasks queued here inherit it. Nothing without a
    tenant."""
    if tenant is None or not valid(tenant):
        yield
        return
    token = _serving.set(Serving(agent_id, parent_id, tenant))
    try:
        yield
    finally:
        _serving.reset(token)


def tenant_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The tenant recorded in a task's metadata, if it holds a usable one."""
    if not metadata:
        return None
    value = metadata.get(KEY)
    return value if valid(value) else None


def resolve(
    tenant: str | None, metadata: Mapping[str, Any] | None, what: str, *, inherit: bool = True
) -> tuple[str | None, dict[str, Any] | None]:
    """The tenant of a new task and its metadata with `metadata["tenant"]` set to it.

    `tenant` and `metadata["tenant"]` may both be given only when equal (else ValueError
    naming both); without either, the tenant of the task served in this context, if
    `inherit`. Raises ValueError for a tenant that breaks `RULE`."""
    if metadata is not None and not isinstance(metadata, Mapping):
        return tenant, metadata  # the caller names the error
    given = None if metadata is None else metadata.get(KEY)
    if tenant is not None and given is not None and tenant != given:
        raise ValueError(
            f"{what}: tenant={tenant!r} and metadata['tenant']={given!r} differ; give the "
            "tenant once (tenant=... or metadata={'tenant': ...})."
        )
    chosen = tenant if tenant is not None else given
    if chosen is None and inherit:
        chosen = current()
    if chosen is None:
        return None, None if metadata is None else dict(metadata)
    check_tenant(chosen, f"{what}: tenant")
    return chosen, {**(metadata or {}), KEY: chosen}
