"""Runners: run an agent for a task and record what it does as events."""

from __future__ import annotations

from .base import BaseAgentRunner
from .recorder import EventRecorder
from .redaction import REDACTED, Redactor, is_secret_key, redact_secrets

__all__ = [
    "REDACTED",
    "BaseAgentRunner",
    "EventRecorder",
    "Redactor",
    "is_secret_key",
    "redact_secrets",
]
