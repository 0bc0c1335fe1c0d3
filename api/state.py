"""The live state of one router: what its endpoints share, and the dependency that hands it to
them.

`router()` builds one `LiveState` and puts it first among each route's dependencies, where it
marks every request the router serves; the endpoints, plain functions at module level, then
take it with `Depends(live_state)`. The state travels with the route, not with the app, so
that an application may mount several routers (one per read model) side by side.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .authorization import BearerToken
from .history import History
from .hub import Hub
from .responses import OpenFeeds

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Live", "LiveState", "live_state"]

logger = logging.getLogger(__name__)

_SCOPE_KEY = "agentexec.live"


@dataclass(frozen=True, eq=False)
class LiveState:
    """One router's shared state: its SSE hub and the feeds it serves, the history (of the
    Redis namespace's partitions) and the read model, its bearer token, the limits of each
    feed (`keepalive` and `send_timeout` in seconds, `send_buffer` in bytes), and its
    metrics when it serves them."""

    hub: Hub
    history: History
    feeds: OpenFeeds
    engine: Engine
    redis_url: str | None
    bearer: BearerToken | None
    keepalive: float
    send_timeout: float
    send_buffer: int | None
    registry: CollectorRegistry | None = None
    feed_key: bytes | None = None
    """The key that checks feed tokens (`agentexec.api.tokens`); None: none accepted."""

    async def __call__(self, request: Request) -> None:
        """Route dependency: mark `request` as served with this state."""
        request.scope[_SCOPE_KEY] = self

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session of the read model; an unreachable database answers 503."""
        try:
            with Session(self.engine) as s:
                yield s
        except SQLAlchemyError as e:
            logger.warning("API: the read model is unreachable: %s", e)
            raise HTTPException(503, f"the read model is unreachable ({type(e).__name__})") from e


async def live_state(request: Request) -> LiveState:
    """Dependency: the state of the router serving `request`."""
    return cast(LiveState, request.scope[_SCOPE_KEY])


Live = Annotated[LiveState, Depends(live_state)]
"""An endpoint's parameter of this type receives its router's state."""
