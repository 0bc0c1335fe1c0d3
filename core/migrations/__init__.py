"""Alembic revisions of agentexec's tables, on their own branch labelled `agentexec`.

Add this package to your Alembic `version_locations` (`agentexec:migrations`) and run
`alembic upgrade heads`; see docs/activity.md. `LOCATION` is the same as a path.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOCATION"]

LOCATION = str(Path(__file__).parent)
"""The directory holding the revision scripts, for `version_locations`."""
