"""Authorization by a bearer token: the API's own, for `agentexec api --token`.

An application that has its own users passes its own dependency as `authorize` instead
(docs/api.md#authorization). The token is compared in constant time. Browsers cannot set
headers on `EventSource`, so the dashboard is signed in once by opening `/?token=<token>`:
the page answers with an HttpOnly, SameSite=Strict cookie derived from the token, which
every later request of the page carries. `requested_agent_id` helps such a dependency decide
per agent.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from fastapi import HTTPException, Request

from agentexec.errors import ConfigurationError

__all__ = ["COOKIE", "MIN_TOKEN_CHARS", "BearerToken", "requested_agent_id"]

COOKIE = "agentexec_token"
"""The dashboard's cookie: a digest of the token, never the token itself."""

MIN_TOKEN_CHARS = 16


class BearerToken:
    """A FastAPI dependency admitting requests that carry `token`, as
    `Authorization: Bearer <token>` or the dashboard's cookie; others get 401.

    Raises `ConfigurationError` for a token shorter than `MIN_TOKEN_CHARS`.
    """

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_CHARS or token != token.strip():
            raise ConfigurationError(
                f"the API token has {len(token)} characters (or spaces around it): use at "
                f"least {MIN_TOKEN_CHARS}, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        self._token = token.encode()
        self.cookie = hashlib.sha256(b"agentexec dashboard\0" + self._token).hexdigest()

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def admits(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.matches(credentials.strip()):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.cookie.encode())

    def __call__(self, request: Request) -> None:
        if not self.admits(request):
            raise HTTPException(
                401,
                "this API needs its token: send `Authorization: Bearer <token>`, or open the "
                "dashboard once at /?token=<token>",
                headers={"WWW-Authenticate": 'Bearer realm="agentexec"'},
            )


def requested_agent_id(request: Request) -> UUID | None:
    """Dependency: the agent id a request names in its path, None for routes about every
    activity (lists, counts, the feed of every event) or when it is not a valid UUID (the
    route answers 422 then)."""
    value = request.path_params.get("agent_id")
    if value is None:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        return None
