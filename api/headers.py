"""Security headers: on every response of `create_app`'s app, and the dashboard's
Content-Security-Policy, which allows exactly the page's own inline script and style.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "content_security_policy", "with_security_headers"]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The dashboard may be opened with its token in the address: never pass it on.
    "Referrer-Policy": "no-referrer",
}
"""Sent with every response (a response that sets one itself keeps its own)."""


def content_security_policy(page: str) -> str:
    """The policy of an HTML `page` whose only code is its inline `<script>` and `<style>`
    elements: those, by their SHA-256, and requests to its own origin; nothing else."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()) for b in bodies)
        return " ".join(f"'sha256-{d.decode()}'" for d in digests) or "'none'"

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """`app`, adding `SECURITY_HEADERS` to each HTTP response that lacks them."""

    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await app(scope, receive, send_secured)

    return secured
