"""Retention of the read model: `prune` removes ended activities and their log rows.

The read model keeps every task until told otherwise (about 2.7 KB per task); how long is the
application's choice. The archived events are pruned separately, and only on request
(`agentexec prune --archive`, `agentexec.projector.retention.prune_archive`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, overload

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from agentexec.errors import ConfigurationError
from agentexec.events import TERMINAL, Status

from .reads import is_async

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)


@overload
def prune(session: Session, older_than: timedelta, *, batch_size: int = 1000) -> int: ...
@overload
def prune(
    session: AsyncSession, older_than: timedelta, *, batch_size: int = 1000
) -> Awaitable[int]: ...
def prune(
    session: Session | AsyncSession, older_than: timedelta, *, batch_size: int = 1000
) -> int | Awaitable[int]:
    """Delete the activities that ended (COMPLETE, ERROR or CANCELED) and were last updated
    more than `older_than` ago, with their log rows; returns how many activities.

    Deletes `batch_size` activities per transaction (committing the session each time) and
    logs the progress at INFO, so a large backlog neither holds one long lock nor starts
    over when interrupted. Activities still queued or running are never removed. Raises
    `ConfigurationError` for a negative `older_than` or a batch size below 1. With an
    `AsyncSession`, returns an awaitable.
    """
    if older_than < timedelta(0) or batch_size < 1:
        raise ConfigurationError(
            f"prune(older_than={older_than!r}, batch_size={batch_size!r}): use a duration "
            ">= 0 (e.g. timedelta(days=30)) and a batch size >= 1."
        )
    if is_async(session):
        return session.run_sync(_prune, older_than, batch_size)
    return _prune(session, older_than, batch_size)


def _prune(session: Session, older_than: timedelta, batch_size: int) -> int:
    from . import counts
    from .models import Activity, ActivityLog

    cutoff = (datetime.now(UTC) - older_than).replace(tzinfo=None)
    ended = (Activity.status.in_(list(TERMINAL)), Activity.updated_at < cutoff)
    removed = logs = 0
    while True:
        ids = list(
            session.execute(
                select(Activity.id).where(*ended).order_by(Activity.updated_at).limit(batch_size)
            ).scalars()
        )
        if not ids:
            break
        gone = session.execute(
            select(Activity.agent_type, Activity.status, func.count())
            .where(Activity.id.in_(ids), *ended)
            .group_by(Activity.agent_type, Activity.status)
        ).all()
        counts.add(
            session.connection(), Counter({(name, Status(st).name): -n for name, st, n in gone})
        )
        logs += session.execute(
            delete(ActivityLog).where(ActivityLog.activity_id.in_(ids))
        ).rowcount  # type: ignore[attr-defined]
        removed += session.execute(delete(Activity).where(Activity.id.in_(ids), *ended)).rowcount  # type: ignore[attr-defined]
        session.commit()
        logger.info(
            "prune: removed %d activities (%d log rows) so far, ended before %s",
            removed,
            logs,
            cutoff,
        )
    return removed
