"""What of an agent's payloads may go into an event: secrets redacted, size bounded.

Events are kept (in Redis, in the SQL archive) and shown (SSE, dashboards) to people who must
not see an API key a model passed to a tool. Tool arguments therefore go through a redactor
and are then summarised as compact JSON no longer than `AGENTEXEC_MAX_EVENT_SUMMARY_CHARS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import msgspec

from agentexec.credentials import REDACTED, redact_text

logger = logging.getLogger(__name__)

ELLIPSIS = "…"

Redactor = Callable[[str, Any], Any]
"""`(tool_name, arguments) -> arguments to record`. `arguments` is the decoded JSON the model
sent (usually a dict), or the raw text when it is not JSON."""

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "signature",
    }
)
_SECRET_JOINED = ("apikey", "privatekey", "accesskey", "secretkey", "sessionid", "clientsecret")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_MAX_ITEMS = 50
_MAX_DEPTH = 6


def is_secret_key(key: str) -> bool:
    """True for names such as `api_key`, `password`, `Authorization`, `accessToken`,
    `client_secret` (and not for `max_tokens` or `author`)."""
    words = [w.lower().rstrip("0123456789") for w in _WORD.findall(key)]
    joined = "".join(words)
    return any(w in _SECRET_WORDS for w in words) or any(s in joined for s in _SECRET_JOINED)


def redact_secrets(tool: str, arguments: Any) -> Any:
    """The default redactor: values under secret-looking keys, and strings that look like keys
    or bearer tokens, become `"[redacted]"`, and URL passwords `***`, at any depth (the
    redaction of error texts, `agentexec.credentials`)."""
    if isinstance(arguments, dict):
        return {
            k: REDACTED if is_secret_key(str(k)) else redact_secrets(tool, v)
            for k, v in arguments.items()
        }
    if isinstance(arguments, list | tuple):
        return [redact_secrets(tool, v) for v in arguments]
    if isinstance(arguments, str):
        return redact_text(arguments)
    return arguments


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def summarize_arguments(tool: str, raw: str, redact: Redactor, limit: int) -> str:
    """A tool call's raw JSON arguments as a redacted summary of at most `limit` characters.

    A redactor that raises does not stop the agent: nothing of the arguments is recorded.
    """
    try:
        decoded: Any = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        decoded = raw
    try:
        cleaned = redact(tool, decoded)
    except Exception:
        logger.exception("redactor %r failed on arguments of tool %r", redact, tool)
        return REDACTED
    return summarize(cleaned, limit)


def summarize(value: Any, limit: int) -> str:
    """`value` as compact JSON of at most `limit` characters (strings as they are)."""
    if isinstance(value, str):
        return truncate(value, limit)
    shrunk = _shrink(value, limit, 0)
    text = msgspec.json.encode(shrunk, enc_hook=lambda o: truncate(repr(o), limit)).decode()
    return truncate(text, limit)


def _shrink(value: Any, limit: int, depth: int) -> Any:
    """Bound the work of encoding: long strings, long containers and deep nesting are cut
    before the JSON is built (the summary is cut again afterwards)."""
    if isinstance(value, str):
        return truncate(value, limit)
    if depth >= _MAX_DEPTH and isinstance(value, dict | list | tuple):
        return ELLIPSIS
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): _shrink(v, limit, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out[ELLIPSIS] = f"{len(items) - _MAX_ITEMS} more"
        return out
    if isinstance(value, list | tuple):
        seq = [_shrink(v, limit, depth + 1) for v in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            seq.append(ELLIPSIS)
        return seq
    return value
