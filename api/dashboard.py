"""The dashboard: one page of plain HTML, CSS and JavaScript, served by the API (no build step).

It lists the activities with status badges and progress bars and shows one activity's
timeline, kept live through EventSource; see docs/api.md.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi.responses import HTMLResponse

__all__ = ["html", "page"]


@cache
def html() -> str:
    return resources.files("agentexec.api").joinpath("dashboard.html").read_text("utf-8")


def page() -> HTMLResponse:
    """`GET /`: the dashboard. Its data comes from the API routes, relative to this page."""
    return HTMLResponse(html(), headers={"Cache-Control": "no-cache"})
