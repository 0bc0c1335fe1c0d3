"""Feed tokens: what `feed_token` signs, `verify_feed_token` gives back, and every way a token
is refused (expired, forged, tampered, another secret, malformed), with messages that say
why; secrets shorter than 32 bytes are refused where they are configured."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from agentexec.api.tokens import (
    MIN_SECRET_BYTES,
    FeedScope,
    FeedTokenError,
    feed_secret,
    feed_token,
    verify_feed_token,
)
from agentexec.config import Settings
from agentexec.errors import ConfigurationError

SECRET = "s" * MIN_SECRET_BYTES
KEY = SECRET.encode()
NOW = 1_800_000_000.0


def test_a_tenant_token_round_trips() -> None:
    token = feed_token(SECRET, tenant="acme", expires_in=600, now=NOW)
    assert token.startswith("v1.") and token.count(".") == 2
    assert verify_feed_token(KEY, token, now=NOW + 599) == FeedScope("acme", None, int(NOW) + 600)


def test_a_task_token_round_trips() -> None:
    agent = uuid.uuid4()
    for given in (agent, str(agent)):
        token = feed_token(KEY, agent_id=given, expires_in=30, now=NOW)
        assert verify_feed_token(KEY, token, now=NOW) == FeedScope(None, agent, int(NOW) + 30)


def test_settings_give_the_secret() -> None:
    settings = Settings(feed_secret=SECRET)
    token = feed_token(settings, tenant="org:42", now=NOW)
    assert verify_feed_token(feed_secret(settings), token, now=NOW).tenant == "org:42"
    assert SECRET not in repr(settings)


def test_an_expired_token_is_refused() -> None:
    token = feed_token(SECRET, tenant="acme", expires_in=10, now=NOW)
    with pytest.raises(FeedTokenError, match=r"expired 5 s ago; ask the application for a new"):
        verify_feed_token(KEY, token, now=NOW + 15)
    with pytest.raises(FeedTokenError, match="expired"):
        verify_feed_token(KEY, token, now=NOW + 10)


def test_forged_and_tampered_tokens_are_refused() -> None:
    token = feed_token(SECRET, tenant="acme", now=NOW)
    version, body, signature = token.split(".")
    # Another tenant, or a later expiry, in the payload: the signature no longer matches.
    for payload in ({"t": "globex", "e": int(NOW) + 600}, {"t": "acme", "e": int(NOW) + 10**6}):
        forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        with pytest.raises(FeedTokenError, match="signature does not match"):
            verify_feed_token(KEY, f"{version}.{forged_body}.{signature}", now=NOW)
    other = feed_token("o" * 40, tenant="acme", now=NOW)
    with pytest.raises(FeedTokenError, match="signed with another secret"):
        verify_feed_token(KEY, other, now=NOW)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(FeedTokenError, match="signature does not match"):
        verify_feed_token(KEY, f"{version}.{body}.{flipped}", now=NOW)
    for bad in ("", "v1", "v2." + body + "." + signature, f"{version}.{body}.!!", "a.b.c.d"):
        with pytest.raises(FeedTokenError):
            verify_feed_token(KEY, bad, now=NOW)


def test_bad_arguments_and_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of tenant"):
        feed_token(SECRET, now=NOW)
    with pytest.raises(ValueError, match="exactly one of tenant"):
        feed_token(SECRET, tenant="a", agent_id=uuid.uuid4(), now=NOW)
    with pytest.raises(ValueError, match="not a usable tenant"):
        feed_token(SECRET, tenant="a b")
    with pytest.raises(ValueError, match="not a UUID"):
        feed_token(SECRET, agent_id="nope")
    for life in (0, -1, 8 * 24 * 3600):
        with pytest.raises(ValueError, match="expires_in"):
            feed_token(SECRET, tenant="a", expires_in=life)
    with pytest.raises(ConfigurationError, match=r"12 bytes long; use at least 32"):
        feed_token("short secret", tenant="a")
    with pytest.raises(ConfigurationError, match="AGENTEXEC_FEED_SECRET is 5 bytes long"):
        feed_token(Settings(feed_secret="12345"), tenant="a")
    with pytest.raises(ConfigurationError, match="set AGENTEXEC_FEED_SECRET"):
        feed_token(Settings(), tenant="a")
