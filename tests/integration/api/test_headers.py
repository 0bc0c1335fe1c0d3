"""Security headers: on every response of `create_app`, and the dashboard's CSP, which
allows exactly its own inline script and style (checked in Chromium by test_dashboard.py)."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import httpx
from sqlalchemy import Engine

from agentexec.api import create_app
from agentexec.connection import close_redis


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_security_headers_on_every_response(redis_conf: str, db: Engine) -> None:
    transport = httpx.ASGITransport(app=create_app(db, token="a-token-long-enough-here"))
    bearer = {"Authorization": "Bearer a-token-long-enough-here"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        responses = [
            await client.get("/api/activities", headers=bearer),
            await client.get(f"/api/activities/{uuid.uuid4()}", headers=bearer),  # 404
            await client.get("/api/activities?page=0", headers=bearer),  # 422
            await client.get("/api/activities"),  # 401
            await client.get("/"),
        ]
        for response in responses:
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
        page = responses[-1]
    await close_redis()

    policy = dict(
        part.split(" ", 1) for part in page.headers["content-security-policy"].split("; ")
    )
    script = re.search(r"<script>(.*?)</script>", page.text, re.DOTALL)
    style = re.search(r"<style>(.*?)</style>", page.text, re.DOTALL)
    assert script and style
    assert policy["script-src"] == sha256(script.group(1))
    assert policy["style-src"] == sha256(style.group(1))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'"
