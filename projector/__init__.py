"""Projector: builds the SQL read model from the event log (see docs/projector.md), and keeps
the `Archive` of every event it applied.

`Projector` and `Archive` are imported on first use: `agentexec.projector.commands` (loaded
by every `agentexec` command) does not pull in the SQL models and SQLAlchemy's ORM.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .archive import Archive
    from .projector import Projector

__all__ = ["Archive", "Projector"]


def __getattr__(name: str) -> Any:
    if name == "Projector":
        from .projector import Projector

        return Projector
    if name == "Archive":
        from .archive import Archive

        return Archive
    raise AttributeError(f"module 'agentexec.projector' has no attribute {name!r}")
