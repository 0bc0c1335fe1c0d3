"""The dashboard: one page of plain HTML, CSS and JavaScript, served by the API (no build step).

It lists the activities with status badges and progress bars and shows one activity's
timeline, kept live through EventSource; see docs/api.md.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from .authorization import COOKIE
from .headers import SECURITY_HEADERS, content_security_policy
from .state import Live

__all__ = ["headers", "html", "page"]


@cache
def html() -> str:
    return resources.files("agentexec.api").joinpath("dashboard.html").read_text("utf-8")


@cache
def headers() -> dict[str, str]:
    """The page's headers: its CSP, derived from the page itself, and the security ones."""
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": content_security_policy(html()),
        **SECURITY_HEADERS,
    }


def page(request: Request, live: Live) -> Response:
    """`GET /`: the dashboard. Its data comes from the API routes, relative to this page.

    With a token, `GET /?token=<token>` signs the browser in: a cookie the API routes accept,
    then a redirect to the page without the token in its address.
    """
    bearer = live.bearer
    given = request.query_params.get("token")
    if bearer is not None and given is not None:
        if not bearer.matches(given):
            return PlainTextResponse("wrong token", status_code=401)
        rest = request.url.remove_query_params("token")
        response = RedirectResponse(
            rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303
        )
        response.set_cookie(
            COOKIE,
            bearer.cookie,
            path=request.url.path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    return HTMLResponse(html(), headers=headers())
