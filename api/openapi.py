"""The API's OpenAPI document, as `create_app` serves it at `/openapi.json` with every optional
route (`ui_routes`), for tools that generate clients from it without a running server:

    python -m agentexec.api.openapi > api/client/openapi.json

`make client` runs this and generates the TypeScript types of api/client from the output.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from sqlalchemy import create_engine

__all__ = ["document"]


def document() -> dict[str, Any]:
    """The OpenAPI document of `create_app(engine, ui_routes=True)` (no database is read)."""
    from .app import create_app

    return create_app(create_engine("sqlite://"), ui_routes=True).openapi()


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
