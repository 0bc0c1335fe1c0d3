"""Handlers of the seed samples a newcomer copies (module level, so that spawned worker
processes can import them)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class APIContext(BaseModel):
    endpoint: str
    reraise: bool = False


class APIError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def call_external_api(endpoint: str) -> dict[str, object]:
    raise APIError(f"quota exceeded at {endpoint}")


async def api_task(agent_id: UUID, context: APIContext) -> dict[str, object]:
    """Seed 000, "Handle errors explicitly", as written (and seed 002's re-raise variant)."""
    try:
        result = await call_external_api(context.endpoint)
        return {"success": True, "data": result}
    except APIError as e:
        ax.activity.error(agent_id, f"API error: {e.message}")
        if context.reraise:
            raise
        return {"success": False, "error": str(e)}
