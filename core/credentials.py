"""Credentials kept out of what agentexec records and logs.

Error texts, progress messages and tool arguments are kept (Redis, the SQL read model and
archive) and shown (REST, SSE, dashboards, logs) to people who must not see a password or an
API key. A URL keeps everything but its password (`redis://user:***@host:6379/0`); values
that look like keys or tokens (`sk-...`, `Bearer ...`, `password=...`) become `[redacted]`.
"""

from __future__ import annotations

import re

__all__ = ["HIDDEN", "REDACTED", "SECRET_VALUE", "redact_text", "redact_url"]

REDACTED = "[redacted]"
HIDDEN = "***"
"""What a URL's password becomes."""

SECRET_VALUE = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI-style keys
    r"|\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bxox[abpr]-[A-Za-z0-9-]{10,}"
)
"""Strings that are secrets whatever they are called."""

# `scheme://user:password@`: the password cannot hold `@`, `/` or spaces unencoded (RFC 3986).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]+@")
# `password=...` (also `sentinel_password=...`) in a URL's query string.
_QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#\s]*")
# `password=...` in query strings and libpq-style connection strings.
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b((?:sentinel_)?(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|token)=)"
    r"[^\s&;,'\"]+"
)


def redact_url(url: str) -> str:
    """`url` with its passwords, if any, shown as `***` (for messages and log lines): the one
    before `@`, also in a URL listing several hosts (`redis+sentinel://:pw@h1,h2/name`), and
    `password=` or `sentinel_password=` query parameters."""
    url = _URL_PASSWORD.sub(rf"\g<1>{HIDDEN}@", url)
    return _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", url) if "password=" in url else url


def redact_text(text: str) -> str:
    """`text` with URL passwords, key-like values and `password=...` assignments hidden;
    `text` itself (the same object) when there is nothing to hide."""
    # Substring tests first: every event's message passes here, and most hold no secret.
    out = text
    if "://" in out:
        out = _URL_PASSWORD.sub(rf"\g<1>{HIDDEN}@", out)
    if "=" in out:
        out = _ASSIGNED_SECRET.sub(rf"\g<1>{REDACTED}", out)
    if (
        "sk-" in out
        or "Bearer" in out
        or "AKIA" in out
        or "xox" in out
        or ("gh" in out and "_" in out)
    ):
        out = SECRET_VALUE.sub(REDACTED, out)
    return text if out == text else out
