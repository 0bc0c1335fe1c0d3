"""Credentials kept out of messages, errors and log lines."""

from __future__ import annotations

import logging
import uuid

import pytest

import agentexec as ax
from agentexec.connection import close_redis, reset_sync_clients
from agentexec.credentials import redact_text, redact_url
from agentexec.errors import RedisUnavailableError
from agentexec.limits import describe_traceback
from agentexec.runners.redaction import redact_secrets

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0" * 2


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:hunter2@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("rediss://:hunter2@cache.internal:6380", "rediss://:***@cache.internal:6380"),
        (
            "postgresql+psycopg://app:p%40ss@db/prod?sslmode=require",
            "postgresql+psycopg://app:***@db/prod?sslmode=require",
        ),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user@cache:6379", "redis://user@cache:6379"),
        ("sqlite:///agents.db", "sqlite:///agents.db"),
    ],
)
def test_a_url_keeps_everything_but_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_text_loses_passwords_in_urls_keys_and_tokens() -> None:
    text = (
        f"could not reach redis://agent:s3cret-pw@cache:6379/0 with {KEY}; "
        "header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig, "
        "dsn host=db password=pg-secret-1 user=app, url https://x.io/?token=tok-secret-2&a=1"
    )
    shown = redact_text(text)
    for secret in ("s3cret-pw", KEY, "eyJhbGciOiJIUzI1NiJ9", "pg-secret-1", "tok-secret-2"):
        assert secret not in shown
    assert "redis://agent:***@cache:6379/0" in shown
    assert "host=db" in shown and "user=app" in shown and "a=1" in shown


def test_text_without_secrets_is_returned_as_is() -> None:
    text = "max_tokens=512 and 12 tokens used; see http://example.com:8080/x"
    assert redact_text(text) is text


def test_tool_arguments_and_errors_share_the_patterns() -> None:
    assert KEY not in str(redact_secrets("tool", {"q": f"use {KEY}"}))
    assert "pw1" not in str(redact_secrets("tool", ["redis://u:pw1@h"]))


def test_redis_unavailable_errors_and_logs_do_not_show_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 1 refuses at once: the write fails with the project's error, which names the URL.
    ax.CONF.redis_url = "redis://agent:hunter2-secret@127.0.0.1:1/0"
    caplog.set_level(logging.DEBUG, logger="agentexec")
    try:
        with pytest.raises(RedisUnavailableError) as raised:
            ax.activity.update(uuid.uuid4(), "step 1")
    finally:
        reset_sync_clients()
    assert "hunter2-secret" not in str(raised.value)
    assert "redis://agent:***@127.0.0.1:1/0" in str(raised.value)
    assert "hunter2-secret" not in caplog.text


def test_a_redis_unavailable_error_redacts_any_url_it_is_given() -> None:
    error = RedisUnavailableError("Redis at redis://:pw-in-message@h:1 is unreachable")
    assert "pw-in-message" not in str(error) and "redis://:***@h:1" in str(error)


async def test_enqueue_gives_up_without_showing_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.apps.basic import Echo

    ax.CONF.redis_url = "redis://agent:hunter2-secret@127.0.0.1:1/0"
    ax.CONF.enqueue_timeout = 0.2
    caplog.set_level(logging.DEBUG, logger="agentexec")
    try:
        with pytest.raises(RedisUnavailableError) as raised:
            await ax.enqueue("echo", Echo(text="x"))
    finally:
        await close_redis()
    assert "hunter2-secret" not in str(raised.value)
    assert "hunter2-secret" not in caplog.text


def test_a_logged_traceback_loses_the_secrets_in_its_exception() -> None:
    try:
        raise ValueError(
            "could not reach redis://app:hunter2@cache:6379/0 with sk-abcdefghijklmnop1234"
        )
    except ValueError as e:
        shown = describe_traceback(e)
    assert "Traceback" in shown and "ValueError" in shown
    assert "hunter2" not in shown and "sk-abcdefghijklmnop1234" not in shown
    assert "redis://app:***@cache:6379/0" in shown
