"""Runners: run an agent for a task and record what it does as events.

`OpenAIRunner` (OpenAI Agents SDK) is imported on first use, so that importing this package
does not import the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentexec.credentials import REDACTED

from .base import BaseAgentRunner
from .recorder import EventRecorder
from .redaction import Redactor, is_secret_key, redact_secrets
from .streaming import AgentStream

if TYPE_CHECKING:
    from .openai import OpenAIRunner, StreamedRun

__all__ = [
    "REDACTED",
    "AgentStream",
    "BaseAgentRunner",
    "EventRecorder",
    "OpenAIRunner",
    "Redactor",
    "StreamedRun",
    "is_secret_key",
    "redact_secrets",
]


def __getattr__(name: str) -> Any:
    if name in ("OpenAIRunner", "StreamedRun"):
        try:
            from . import openai
        except ModuleNotFoundError as e:
            if e.name != "agents":
                raise
            raise ImportError(
                f"agentexec.{name} needs the OpenAI Agents SDK, which is not installed; "
                "install it with `pip install 'agentexec[openai]'`."
            ) from e
        return getattr(openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
