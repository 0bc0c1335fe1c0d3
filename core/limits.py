"""What an event may carry: names that fit the read model's columns, and free text that is
bounded, storable by every backend, and free of credentials.

Names (of tasks, queues, pipelines, trackers) are code: a bad one is refused where it is
declared, with an `InvalidNameError` that names the value, the limit and the fix. Free text
(progress messages, error texts) is data produced while a task runs: refusing it would fail
the task for its own report, so it is made recordable instead (see `recordable`).
"""

from __future__ import annotations

import traceback

from .credentials import redact_text
from .errors import InvalidNameError
from .runtime import current

__all__ = [
    "NAME_MAX_CHARS",
    "check_name",
    "check_queue_name",
    "describe_exception",
    "describe_traceback",
    "recordable",
    "storable",
]

NAME_MAX_CHARS = 255
"""Longest task, queue, pipeline or tracker name: the read model's `String(255)` columns."""

_SHOWN = 40
"""Characters of a refused name shown in the error."""


def check_name(value: object, what: str) -> str:
    """`value` if the read model can store it as a `what` ("task name", ...); else raises
    `InvalidNameError`."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidNameError(f"{what} {value!r} is empty or not a string; use a short name.")
    shown = repr(value) if len(value) <= _SHOWN else f"{value[:_SHOWN]!r}..."
    if len(value) > NAME_MAX_CHARS:
        raise InvalidNameError(
            f"{what} {shown} is {len(value):,} characters long, above the {NAME_MAX_CHARS}-"
            "character limit of its read-model column; use a shorter name."
        )
    if "\x00" in value or storable(value) is not value:
        raise InvalidNameError(
            f"{what} {shown} holds a NUL or an unencodable character (a lone surrogate), "
            "which the database cannot store; use printable text."
        )
    return value


def check_queue_name(value: object) -> str:
    """`check_name` for a queue name, which also may not hold braces: a queue's Redis keys
    carry its name as their Redis Cluster hash tag."""
    name = check_name(value, "queue name")
    if "{" in name or "}" in name:
        raise InvalidNameError(
            f"queue name {name[:_SHOWN]!r} holds braces, which would break its keys' Redis "
            "Cluster hash tag; use a name without braces."
        )
    return name


def storable(text: str) -> str:
    """`text` with what no database can store escaped visibly: NUL as `\\x00`, lone
    surrogates (as in text decoded with `surrogateescape`) as `\\udc80`; `text` itself
    when it has neither."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def recordable(text: str) -> str:
    """`text` as an event records it: credentials redacted (see `agentexec.credentials`),
    made `storable`, and at most `AGENTEXEC_MAX_MESSAGE_BYTES` long in UTF-8, a longer text
    cut and ending with a marker that says so. `text` itself when it needs none of that."""
    # The limit of the calling code's runtime: `recordable` runs inside `events.encode`, too
    # deep to pass the settings down.
    limit = current().settings.max_message_bytes
    # Characters take 1 to 4 bytes: cut a long text cheaply before the regex work.
    whole = len(text) <= limit + 1024
    shown = storable(redact_text(text if whole else text[: limit + 1024]))
    if whole and (len(shown) <= limit // 4 or len(shown.encode("utf-8")) <= limit):
        return shown  # `text` itself when nothing was redacted or escaped
    marker = (
        f" …[cut from {len(text):,} characters to {limit:,} bytes (AGENTEXEC_MAX_MESSAGE_BYTES)]"
    )
    keep = limit - len(marker.encode("utf-8"))
    return shown.encode("utf-8")[:keep].decode("utf-8", "ignore") + marker


def describe_exception(exc: BaseException) -> str:
    """`"ValueError: message"` for any exception, recordable (see `recordable`), even when
    its `str()` raises or holds text no database can store."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        try:
            text = f"<str() failed; repr: {exc!r}>"
        except Exception:
            text = "<str() and repr() failed>"
    return recordable(f"{name}: {text}" if text else name)


def describe_traceback(exc: BaseException) -> str:
    """The traceback of `exc` as a log line may show it: credentials redacted, storable."""
    return storable(redact_text("".join(traceback.format_exception(exc)).rstrip()))
