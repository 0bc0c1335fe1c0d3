"""Authorization from the command line and the environment: a bearer token or the
application's hook, required whenever `agentexec api` binds beyond loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import HTTPException, Request
from sqlalchemy import Engine

from agentexec.api import create_app
from agentexec.cli import main
from agentexec.connection import close_redis
from agentexec.errors import ConfigurationError

TOKEN = "s3cret-token-of-some-length"


def admit_alice(request: Request) -> None:
    """The hook `--auth` names in these tests."""
    if request.headers.get("X-User") != "alice":
        raise HTTPException(403, "alice only")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What `agentexec api` would have served: uvicorn.run's arguments, recorded."""
    import uvicorn

    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw}))
    for name in ("AGENTEXEC_API_TOKEN", "AGENTEXEC_API_AUTH"):
        monkeypatch.delenv(name, raising=False)
    yield runs


def run_api(db: Engine, *args: str, env: dict[str, str] | None = None) -> Any:
    url = str(db.url)
    return CliRunner().invoke(main, ["api", "--database-url", url, *args], env=env)


async def get(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.get(path, **kwargs)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "api.example.com"])
def test_beyond_loopback_without_authorization_refuses_to_start(
    served: list[dict[str, Any]], db: Engine, host: str
) -> None:
    result = run_api(db, "--host", host)
    assert result.exit_code == 2, result.output
    assert "AGENTEXEC_API_TOKEN" in result.output and "--insecure-no-auth" in result.output
    assert served == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_authorization(
    served: list[dict[str, Any]], db: Engine, host: str
) -> None:
    assert run_api(db, "--host", host).exit_code == 0
    assert served[0]["host"] == host


def test_explicit_opt_out_serves_open(served: list[dict[str, Any]], db: Engine) -> None:
    assert run_api(db, "--host", "0.0.0.0", "--insecure-no-auth").exit_code == 0
    assert len(served) == 1


async def test_token_from_the_environment_guards_every_api_route(
    served: list[dict[str, Any]], redis_conf: str, db: Engine
) -> None:
    result = run_api(db, "--host", "0.0.0.0", env={"AGENTEXEC_API_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    app = served[0]["app"]
    for path in ("/api/activities", "/api/activities/active/count", "/api/events"):
        refused = await get(app, path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await get(app, path, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401
    ok = await get(app, "/api/activities", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    await close_redis()


async def test_token_from_the_command_line(
    served: list[dict[str, Any]], redis_conf: str, db: Engine
) -> None:
    assert run_api(db, "--host", "0.0.0.0", "--token", TOKEN).exit_code == 0
    app = served[0]["app"]
    assert (await get(app, "/api/activities")).status_code == 401
    ok = await get(app, "/api/activities", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    await close_redis()


def test_a_short_token_is_refused_with_the_fix(served: list[dict[str, Any]], db: Engine) -> None:
    result = run_api(db, "--token", "short")
    assert result.exit_code == 2
    assert "at least 16" in result.output and "secrets.token_urlsafe" in result.output
    assert served == []


async def test_auth_hook_from_the_environment(
    served: list[dict[str, Any]], redis_conf: str, db: Engine
) -> None:
    hook = f"{__name__}:admit_alice"
    result = run_api(db, "--host", "0.0.0.0", env={"AGENTEXEC_API_AUTH": hook})
    assert result.exit_code == 0, result.output
    app = served[0]["app"]
    assert (await get(app, "/api/activities")).status_code == 403
    assert (await get(app, "/api/activities", headers={"X-User": "alice"})).status_code == 200
    await close_redis()


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ("no_colon", "module:attribute"),
        ("no.such.module:f", "cannot import"),
        (f"{__name__}:nothing", "no attribute"),
        (f"{__name__}:TOKEN", "not a function"),
    ],
)
def test_a_bad_auth_hook_is_refused(
    served: list[dict[str, Any]], db: Engine, hook: str, message: str
) -> None:
    result = run_api(db, "--auth", hook)
    assert result.exit_code == 2
    assert message in result.output
    assert served == []


async def test_the_dashboard_signs_in_once_with_the_token(redis_conf: str, db: Engine) -> None:
    app = create_app(db, token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/")).status_code == 200  # the page holds no data
        assert (await client.get("/api/activities")).status_code == 401
        assert (await client.get("/?token=wrong-token-of-some-length")).status_code == 401
        signed = await client.get(f"/?token={TOKEN}&x=1")
        assert signed.status_code == 303
        assert signed.headers["location"] == "/?x=1"
        cookie = signed.headers["set-cookie"]
        assert TOKEN not in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert (await client.get("/api/activities")).status_code == 200  # the cookie
        client.cookies.clear()
        assert (await client.get("/api/activities")).status_code == 401
    await close_redis()


def test_router_refuses_a_short_token(db: Engine) -> None:
    from agentexec.api import router

    with pytest.raises(ConfigurationError, match="at least 16"):
        router(engine=db, token="short")
