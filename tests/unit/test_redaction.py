"""What of a tool call's arguments may go into an event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentexec.runners.redaction import (
    ELLIPSIS,
    REDACTED,
    is_secret_key,
    redact_secrets,
    summarize,
    summarize_arguments,
)


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "X-API-KEY",
        "password",
        "db_password2",
        "Authorization",
        "access_token",
        "refreshToken",
        "client_secret",
        "private_key",
        "session_id",
        "cookie",
        "aws_secret_access_key",
    ],
)
def test_secret_looking_keys_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["query", "max_tokens", "author", "company", "session", "keyword"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_secrets_walks_nested_values_and_spots_key_shaped_strings() -> None:
    arguments = {
        "query": "acme",
        "headers": {"Authorization": "Bearer abc.def.ghi", "Accept": "json"},
        "auth": {"user": "bob", "password": "hunter2"},
        "notes": ["use sk-abcdefghijklmnopqrstuvwx now", "Bearer zzzzzzzzzzzz"],
        "max_tokens": 50,
    }
    assert redact_secrets("fetch", arguments) == {
        "query": "acme",
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "auth": REDACTED,
        "notes": [f"use {REDACTED} now", REDACTED],
        "max_tokens": 50,
    }


def test_summaries_are_bounded_however_large_the_payload() -> None:
    huge: dict[str, Any] = {"text": "x" * 100_000, "items": list(range(10_000))}
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(100):
        cursor["deeper"] = {}
        cursor = cursor["deeper"]
    for value in (huge, nested, "y" * 10_000, list(range(5000))):
        text = summarize(value, 200)
        assert len(text) <= 200
    assert summarize({"a": 1}, 200) == '{"a":1}'
    assert summarize("z" * 300, 100).endswith(ELLIPSIS)


def test_summarize_arguments_decodes_redacts_and_cuts() -> None:
    raw = json.dumps({"query": "acme", "api_key": "sk-abcdefghijklmnopqrstuvwx"})
    assert summarize_arguments("search", raw, redact_secrets, 500) == (
        '{"query":"acme","api_key":"[redacted]"}'
    )
    # Arguments that are not JSON are treated as text.
    assert summarize_arguments("raw", "token sk-abcdefghijklmnopqrstuvwx", redact_secrets, 500) == (
        f"token {REDACTED}"
    )
    assert summarize_arguments("none", "", redact_secrets, 500) == "{}"


def test_a_custom_redactor_replaces_the_default_and_a_failing_one_leaks_nothing() -> None:
    def keep_only_query(tool: str, arguments: Any) -> Any:
        return {"query": arguments["query"]}

    raw = json.dumps({"query": "acme", "customer_ssn": "123-45-6789"})
    assert summarize_arguments("search", raw, keep_only_query, 500) == '{"query":"acme"}'

    def broken(tool: str, arguments: Any) -> Any:
        raise KeyError("oops")

    assert summarize_arguments("search", raw, broken, 500) == REDACTED
