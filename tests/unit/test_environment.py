"""Settings from a deployment's environment (seed 001's Docker section, issue 17 item 4)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from agentexec.connection import get_sync_redis, redacted, reset_sync_clients


def _settings_in(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTEXEC_")}
    clean = {k: v for k, v in clean.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-c", f"import agentexec as ax\n{code}"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REDIS_URL": "redis://plain:6379/1"}, "redis://plain:6379/1"),
        (
            {"REDIS_URL": "redis://plain:6379/1", "AGENTEXEC_REDIS_URL": "redis://ours:6379/2"},
            "redis://ours:6379/2",
        ),
        ({}, "redis://localhost:6379/0"),
    ],
)
def test_redis_url_falls_back_to_plain_redis_url(env: dict[str, str], expected: str) -> None:
    done = _settings_in(env, "print(ax.CONF.redis_url)")
    assert done.stdout.strip() == expected, done.stderr


def test_database_url_falls_back_to_plain_database_url() -> None:
    done = _settings_in({"DATABASE_URL": "sqlite:///app.db"}, "print(ax.CONF.database_url)")
    assert done.stdout.strip() == "sqlite:///app.db", done.stderr
    both = {"DATABASE_URL": "sqlite:///app.db", "AGENTEXEC_DATABASE_URL": "sqlite:///ours.db"}
    done = _settings_in(both, "print(ax.CONF.database_url)")
    assert done.stdout.strip() == "sqlite:///ours.db", done.stderr


def test_a_state_backend_other_than_redis_is_rejected_with_what_to_do() -> None:
    done = _settings_in({"AGENTEXEC_STATE_BACKEND": "myapp.state.dynamodb_backend"}, "")
    assert done.returncode == 1
    assert "AGENTEXEC_STATE_BACKEND has value 'myapp.state.dynamodb_backend'" in done.stderr
    assert "Unset it" in done.stderr


def test_each_process_logs_the_redis_url_it_uses_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentexec.connection")
    try:
        get_sync_redis("redis://app:s3cret@redis.internal:6379/0")
    finally:
        reset_sync_clients()
    assert "Redis at redis://app:***@redis.internal:6379/0" in caplog.text
    assert "s3cret" not in caplog.text


def test_redacted() -> None:
    assert redacted("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redacted("rediss://h:6380/0") == "rediss://h:6380/0"
    assert redacted("unix:///tmp/r.sock?db=1&password=pw") == "unix:///tmp/r.sock?db=1&password=***"
