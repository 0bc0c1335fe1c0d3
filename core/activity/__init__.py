"""The activity API. The write side appends events to the log; the read side queries SQL."""

from __future__ import annotations

from .writes import complete, create, error, update

__all__ = ["complete", "create", "error", "update"]
