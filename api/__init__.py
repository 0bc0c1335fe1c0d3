"""The live API: REST reads of the read model, resumable SSE feeds of the event log, and a
dashboard. The only package of agentexec that imports FastAPI (`pip install agentexec[api]`).

    from fastapi import FastAPI
    import agentexec.api

    app = FastAPI()
    app.include_router(agentexec.api.router(engine=engine))

See docs/api.md.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentexec.positions import ORIGIN, Position

    from .activities import POSITION_HEADER
    from .app import create_app
    from .authorization import requested_agent_id
    from .responses import abortable
    from .routes import LiveRouter, router
    from .tokens import FeedScope, FeedTokenError, feed_token, verify_feed_token

__all__ = [
    "ORIGIN",
    "POSITION_HEADER",
    "FeedScope",
    "FeedTokenError",
    "LiveRouter",
    "Position",
    "abortable",
    "create_app",
    "feed_token",
    "requested_agent_id",
    "router",
    "verify_feed_token",
]

_HOMES = {
    "create_app": "app",
    "ORIGIN": "agentexec.positions",
    "Position": "agentexec.positions",
    "abortable": "responses",
    "POSITION_HEADER": "activities",
    "LiveRouter": "routes",
    "requested_agent_id": "authorization",
    "router": "routes",
    "FeedScope": "tokens",
    "FeedTokenError": "tokens",
    "feed_token": "tokens",
    "verify_feed_token": "tokens",
}


# Imported on first use, so that `agentexec api --help` (whose command lives here) does not
# import FastAPI.
def __getattr__(name: str) -> Any:
    import importlib

    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agentexec.api' has no attribute {name!r}")
    module = home if home.startswith("agentexec.") else f"agentexec.api.{home}"
    return getattr(importlib.import_module(module), name)
