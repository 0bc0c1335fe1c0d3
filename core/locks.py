"""Task locks: per-key concurrency (`@pool.task(..., lock_key="{customer_id}")`) and the
per-tenant limit (`AGENTEXEC_MAX_CONCURRENCY_PER_TENANT`).

Both are counted semaphores of one queue, kept in Redis (see the LOCK, UNLOCK and UNPARK
scripts): a lock key admits one task at a time, a tenant `max_concurrency_per_tenant`. A task
that finds one of its locks full is parked in that lock's waiting list, and its worker moves
on; when a holder ends (or its hold expires with its lease), the next waiter gets its slot
and goes back to its stream. This module holds the pure part: the template of a lock key,
checked where it is declared, and the locks one task takes.

With several partitions (`AGENTEXEC_PARTITIONS`, see `agentexec.partitions`) a lock lives in
each partition, with the task's other keys (a script touches one partition). A task whose
definition has a lock key is placed in the partition its key hashes to when `enqueue` knows
the definition (the enqueuing process registered the task, as a pool's module does), so all
the tasks of one key meet in one lock: one at a time per key, as with one partition. Where
the key cannot place the task, its lock holds within its partition only: a task enqueued by
a process that does not know its `lock_key`, one with an idempotency key (which places it),
and a pipeline's step or a tracker's fan-in (in their run's or tracker's partition). The
tenant cap (`AGENTEXEC_MAX_CONCURRENCY_PER_TENANT`) holds per partition: a tenant's root
tasks spread over the partitions, so up to P times the cap of them run at once.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .errors import ContextError, TaskDefinitionError

__all__ = ["LOCK_KEY_MAX_CHARS", "Lock", "check_template", "format_key", "locks_of"]

LOCK_KEY_MAX_CHARS = 200
"""Longest lock key a template may format to."""

KEY = "key:"
TENANT = "tenant:"
"""Name prefixes of a lock: a lock key's, a tenant's."""


@dataclass(frozen=True)
class Lock:
    """One semaphore a task takes before it starts: `name` (`key:<key>` or `tenant:<name>`)
    admits `capacity` tasks at once."""

    name: str
    capacity: int

    @property
    def waiting_message(self) -> str:
        """What the activity of a task parked on this lock says."""
        if self.name.startswith(TENANT):
            return (
                f"Waiting: tenant {self.name[len(TENANT) :]!r} already runs {self.capacity} "
                "task(s) (AGENTEXEC_MAX_CONCURRENCY_PER_TENANT)."
            )
        return (
            f"Waiting for lock key {self.name[len(KEY) :]!r}: "
            "another task with this key is running."
        )


def check_template(template: object, context_type: type[BaseModel], where: str) -> str:
    """`template` if it formats with fields of `context_type`; else `TaskDefinitionError`
    naming the bad field and the model's fields."""
    fields = sorted(context_type.model_fields)
    shown = ", ".join(fields) or "none"
    if not isinstance(template, str) or not template:
        raise TaskDefinitionError(
            f"{where}: lock_key={template!r}; use a non-empty template of the context's "
            f'fields, e.g. lock_key="{{{fields[0] if fields else "customer_id"}}}".'
        )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TaskDefinitionError(
            f"{where}: lock_key={template!r} is not a format template ({e}); write fields "
            'in braces, e.g. "customer-{customer_id}".'
        ) from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise TaskDefinitionError(
                f"{where}: lock_key={template!r} has a positional field {{{field}}}; name a "
                f"field of {context_type.__name__} ({shown})."
            )
        if root not in context_type.model_fields:
            raise TaskDefinitionError(
                f"{where}: lock_key={template!r} names field {root!r}, which "
                f"{context_type.__name__} does not have (its fields: {shown})."
            )
    return template


def format_key(template: str, context: BaseModel, what: str) -> str:
    """The lock key of a task with `context`; `ContextError` when it formats to an empty or
    oversized key."""
    values: dict[str, Any] = {name: getattr(context, name) for name in type(context).model_fields}
    try:
        key = template.format(**values)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise ContextError(
            f"{what}: lock_key={template!r} does not format with this context "
            f"({type(e).__name__}: {e}); check the template's fields."
        ) from None
    if not key.strip():
        raise ContextError(
            f"{what}: lock_key={template!r} formats to the empty key {key!r} with this "
            "context; give the fields it names a value."
        )
    if len(key) > LOCK_KEY_MAX_CHARS:
        raise ContextError(
            f"{what}: lock_key={template!r} formats to a {len(key):,}-character key, "
            f"above the {LOCK_KEY_MAX_CHARS}-character limit; key on a shorter field (an id)."
        )
    return key


def locks_of(
    template: str | None,
    context: BaseModel,
    task_name: str,
    tenant: str | None,
    tenant_limit: int,
) -> list[Lock]:
    """The locks a task takes: its lock key's (capacity 1), then its tenant's when the
    per-tenant limit is set (`tenant_limit` > 0)."""
    locks = []
    if template is not None:
        locks.append(Lock(KEY + format_key(template, context, f"task {task_name!r}"), 1))
    if tenant and tenant_limit > 0:
        locks.append(Lock(TENANT + tenant, tenant_limit))
    return locks


def capacity_of(name: str, tenant_limit: int) -> int:
    """The capacity of lock `name`, as its holders' workers set it."""
    return max(1, tenant_limit) if name.startswith(TENANT) else 1
