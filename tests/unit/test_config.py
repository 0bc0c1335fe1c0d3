from __future__ import annotations

import os
import subprocess
import sys

import pydantic
import pytest

import agentexec as ax
from agentexec.events import Priority
from agentexec.streams import Keys


def test_settings_are_read_from_the_environment_at_import() -> None:
    env = {
        **os.environ,
        "AGENTEXEC_NUM_WORKERS": "7",
        "AGENTEXEC_REDIS_URL": "redis://example:6380/2",
        "AGENTEXEC_ACTIVITY_MESSAGE_ERROR": "Failed: {error}",
        "AGENTEXEC_WORKER_CONCURRENCY": "25",
        "AGENTEXEC_DATABASE_URL": "sqlite:///x.db",
    }
    code = (
        "import agentexec as ax; c = ax.CONF; "
        "print(c.num_workers, c.redis_url, c.activity_message_error, c.worker_concurrency, "
        "c.database_url)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == [
        "7",
        "redis://example:6380/2",
        "Failed:",
        "{error}",
        "25",
        "sqlite:///x.db",
    ]


def test_assignment_is_validated() -> None:
    ax.CONF.redis_url = "redis://elsewhere:6379/0"
    assert ax.CONF.redis_url == "redis://elsewhere:6379/0"
    with pytest.raises(pydantic.ValidationError):
        ax.CONF.num_workers = 0


def test_only_the_redis_state_backend_is_accepted() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"only 'agentexec\.state\.redis_backend'"):
        ax.CONF.state_backend = "myapp.state.dynamodb_backend"


def test_key_prefix_namespaces_every_key() -> None:
    keys = Keys("app1")
    assert keys.events == "app1:events"
    assert keys.queue("emails", Priority.HIGH) == "app1:{emails}:high"
    assert keys.queues("emails") == ["app1:{emails}:high", "app1:{emails}:low"]
    with pytest.raises(pydantic.ValidationError, match="one non-empty Redis Cluster hash tag"):
        ax.CONF.key_prefix = "a{b}{c}"


def test_importing_agentexec_does_not_import_the_agents_sdk_or_fastapi() -> None:
    code = "import sys, agentexec; print('agents' in sys.modules, 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_model_override_must_be_an_import_path() -> None:
    ax.CONF.model_override = "tests.models:SCRIPTED"
    assert ax.CONF.model_override == "tests.models:SCRIPTED"
    with pytest.raises(pydantic.ValidationError, match=r"use 'package\.module:attribute'"):
        ax.CONF.model_override = "tests/models.py"
