"""The `redis+sentinel://` URL form: what it parses into, what it refuses, what logs show."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
import pytest
import redis
from redis.sentinel import MasterNotFoundError

import agentexec as ax
from agentexec import sentinel
from agentexec.connection import (
    REDIS_ERRORS,
    close_redis,
    describe,
    get_redis,
    get_sync_redis,
    reset_sync_clients,
)
from agentexec.credentials import redact_text, redact_url
from agentexec.sentinel import SentinelURL


def test_full_form() -> None:
    url = "rediss+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/mymaster/3?sentinel_password=sp"
    assert sentinel.parse(url) == SentinelURL(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service="mymaster",
        db=3,
        username="app",
        password="p@ss",
        sentinel_password="sp",
        ssl=True,
    )


def test_short_form() -> None:
    assert sentinel.parse("redis+sentinel://127.0.0.1:5000/cache") == SentinelURL(
        sentinels=(("127.0.0.1", 5000),), service="cache"
    )
    assert sentinel.parse("redis+sentinel://:pw@h/cache").password == "pw"
    assert sentinel.parse("redis+sentinel://:pw@h/cache").username is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:secret@/mymaster", "no Sentinel address"),
        ("redis+sentinel://:secret@h:port/mymaster", "'h:port' has no valid port"),
        ("redis+sentinel://:secret@h:70000/mymaster", "'h:70000' has no valid port"),
        ("redis+sentinel://:secret@h", "the path must be the service name"),
        ("redis+sentinel://:secret@h/a/b/c", "the path must be the service name"),
        ("redis+sentinel://:secret@h/mymaster/zero", "database 'zero' is not a number"),
        ("redis+sentinel://:secret@h/mymaster?db=1", "unknown parameter 'db'"),
    ],
)
def test_refusals_name_the_problem_and_the_form_never_the_password(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="use the form redis\\+sentinel://") as caught:
        sentinel.parse(url)
    assert why in str(caught.value)
    assert "secret" not in str(caught.value)


def test_settings_refuse_a_bad_sentinel_url_without_echoing_it() -> None:
    settings = ax.Settings()
    with pytest.raises(pydantic.ValidationError, match="AGENTEXEC_REDIS_URL") as caught:
        settings.redis_url = "redis+sentinel://:secret@h:x/mymaster"
    assert "secret" not in str(caught.value)
    settings.redis_url = "redis+sentinel://:secret@h1,h2/mymaster"


def test_is_sentinel_url() -> None:
    assert sentinel.is_sentinel_url("redis+sentinel://h/m")
    assert sentinel.is_sentinel_url("REDISS+SENTINEL://h/m")
    assert not sentinel.is_sentinel_url("redis://h:6379/0")


@pytest.mark.parametrize("redact", [redact_url, redact_text])
def test_redaction_of_every_password(redact: object) -> None:
    assert callable(redact)
    url = "redis+sentinel://app:pw1@s1:26379,s2:26380/mymaster/0?sentinel_password=pw2"
    shown = redact(url)
    assert "pw1" not in shown and "pw2" not in shown
    assert shown.startswith("redis+sentinel://app:***@s1:26379,s2:26380/mymaster/0?")
    assert redact("redis+sentinel://s1,s2/mymaster") == "redis+sentinel://s1,s2/mymaster"


def test_the_process_logs_the_sentinel_url_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentexec.connection")
    url = "redis+sentinel://:s3cret@127.0.0.1:1/mymaster"
    try:
        client = get_sync_redis(url, ax.Settings())
        # No Sentinel listens there: the client's error is an outage, like any other.
        with pytest.raises(REDIS_ERRORS) as caught:
            client.ping()
        assert isinstance(caught.value, MasterNotFoundError)
    finally:
        reset_sync_clients()
    assert "Redis at redis+sentinel://:***@127.0.0.1:1/mymaster" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_demoted_primary_is_an_outage_that_says_what_to_do() -> None:
    error = redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
    assert isinstance(error, REDIS_ERRORS)
    assert "redis+sentinel://" in describe(error)


async def test_rediss_sentinel_speaks_tls_to_servers_and_sentinels() -> None:
    url = "rediss+sentinel://127.0.0.1:1/mymaster"
    try:
        for client in (get_redis(url, ax.Settings()), get_sync_redis(url, ax.Settings())):
            pool: Any = client.connection_pool
            assert "SSL" in pool.connection_class.__name__
            for node in pool.sentinel_manager.sentinels:
                assert "SSL" in node.connection_pool.connection_class.__name__
    finally:
        await close_redis()
