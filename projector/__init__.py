"""Projector: builds the SQL read model from the event log (see docs/projector.md)."""

from .projector import Projector

__all__ = ["Projector"]
