"""Feed tokens: a browser's pass to one feed, signed by the application that serves it.

A browser's `EventSource` cannot send an `Authorization` header, so an application that
guards its API (a bearer token, its own `authorize`) issues a feed token instead, for one
tenant or one task, valid for a while: `feed_token(secret, tenant="acme", expires_in=600)`.
The page opens `/api/events?feed_token=<it>` (only that tenant's events) or
`/api/activities/<agent id>/events?feed_token=<it>` (only that task's); the API checks the
signature and the expiry and nothing else (see `agentexec.api.routes`, docs/tenants.md).

A token is `v1.<payload>.<signature>`, both base64url without padding: the payload is
compact JSON (`{"t": tenant}` or `{"a": agent id}`, and `"e"`, the expiry in Unix
seconds), the signature HMAC-SHA256 of the version and payload under the secret. Stdlib
only: the issuing side needs no FastAPI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from uuid import UUID

from agentexec.config import Settings
from agentexec.errors import AgentexecError, ConfigurationError
from agentexec.tenants import check_tenant

__all__ = [
    "MAX_EXPIRES_IN",
    "MIN_SECRET_BYTES",
    "FeedScope",
    "FeedTokenError",
    "feed_secret",
    "feed_token",
    "verify_feed_token",
]

MIN_SECRET_BYTES = 32
MAX_EXPIRES_IN = 7 * 24 * 3600
"""Longest life of a token (seconds): a feed token is a short-lived pass, not a key."""
_VERSION = "v1"
_CONTEXT = b"agentexec feed token\0"


class FeedTokenError(AgentexecError, ValueError):
    """A feed token that is malformed, forged, tampered with or expired."""


@dataclass(frozen=True, slots=True)
class FeedScope:
    """What a valid token opens: the feed of `tenant`'s events, or of task `agent_id`'s;
    until `expires` (Unix seconds)."""

    tenant: str | None
    agent_id: UUID | None
    expires: int


def feed_secret(secret_or_settings: str | bytes | Settings | None) -> bytes:
    """The signing key: the secret given, or the settings' `feed_secret`
    (`AGENTEXEC_FEED_SECRET`; default: `ax.CONF` as it is now). Raises ConfigurationError
    when there is none or it is shorter than `MIN_SECRET_BYTES`."""
    if secret_or_settings is None or isinstance(secret_or_settings, Settings):
        if secret_or_settings is None:
            from agentexec.runtime import current

            secret_or_settings = current().settings
        secret: str | bytes | None = secret_or_settings.feed_secret
        where = "AGENTEXEC_FEED_SECRET"
    else:
        secret, where = secret_or_settings, "the feed secret"
    if secret is None:
        raise ConfigurationError(
            "feed tokens need a secret: set AGENTEXEC_FEED_SECRET (or pass "
            "router(feed_secret=...) and feed_token(secret, ...)) to at least "
            f"{MIN_SECRET_BYTES} random bytes, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{where} is {len(key)} bytes long; use at least {MIN_SECRET_BYTES}, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    return key


def feed_token(
    secret_or_settings: str | bytes | Settings | None = None,
    *,
    tenant: str | None = None,
    agent_id: UUID | str | None = None,
    expires_in: float = 600,
    now: float | None = None,
) -> str:
    """A token that opens the feed of `tenant`'s events or of task `agent_id`'s (exactly one
    of them) for `expires_in` seconds from `now` (default: the clock), signed with
    `secret_or_settings` (see `feed_secret`). Raises ValueError for a bad scope or life,
    ConfigurationError for a missing or short secret."""
    key = feed_secret(secret_or_settings)
    if (tenant is None) == (agent_id is None):
        raise ValueError(
            "feed_token(...): give exactly one of tenant=... (the feed of that tenant's "
            "events) or agent_id=... (the feed of that task's events)."
        )
    if not 0 < expires_in <= MAX_EXPIRES_IN:
        raise ValueError(
            f"feed_token(expires_in={expires_in!r}): use seconds above 0 and at most "
            f"{MAX_EXPIRES_IN} (a week); issue a new token when it runs out."
        )
    payload: dict[str, str | int] = {}
    if tenant is not None:
        payload["t"] = check_tenant(tenant, "feed_token(tenant=...):")
    else:
        try:
            payload["a"] = (agent_id if isinstance(agent_id, UUID) else UUID(str(agent_id))).hex
        except ValueError:
            raise ValueError(
                f"feed_token(agent_id={agent_id!r}): not a UUID; pass the task's agent_id."
            ) from None
    payload["e"] = int((time.time() if now is None else now) + expires_in)
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{_VERSION}.{body}.{_b64(_sign(key, body))}"


def verify_feed_token(key: bytes, token: str, now: float | None = None) -> FeedScope:
    """The scope of `token` signed with `key` (see `feed_secret`), if it is intact and not
    expired at `now`; else raises FeedTokenError saying why."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise FeedTokenError(
            "the feed token is not one agentexec.api.feed_token issued (expected "
            f"'{_VERSION}.<payload>.<signature>'); ask the application for a new one."
        )
    _, body, signature = parts
    try:
        given = _unb64(signature)
    except ValueError:
        given = b""
    if not hmac.compare_digest(given, _sign(key, body)):
        raise FeedTokenError(
            "the feed token's signature does not match: it was altered, or signed with another "
            "secret than this API's feed secret; ask the application for a new one."
        )
    try:
        payload = json.loads(_unb64(body))
        expires = int(payload["e"])
        tenant = payload.get("t")
        agent = payload.get("a")
        scope = FeedScope(
            tenant=None if tenant is None else check_tenant(tenant),
            agent_id=None if agent is None else UUID(hex=agent),
            expires=expires,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise FeedTokenError(f"the feed token's payload is not usable ({e}).") from None
    if (scope.tenant is None) == (scope.agent_id is None):
        raise FeedTokenError("the feed token names neither one tenant nor one task.")
    at = time.time() if now is None else now
    if at >= expires:
        raise FeedTokenError(
            f"the feed token expired {int(at - expires)} s ago; ask the application for a new "
            "one (and reconnect with it)."
        )
    return scope


def _sign(key: bytes, body: str) -> bytes:
    return hmac.new(key, _CONTEXT + f"{_VERSION}.{body}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
