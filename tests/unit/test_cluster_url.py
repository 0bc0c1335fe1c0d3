"""The `redis+cluster://` URL form and the key prefix a cluster needs."""

from __future__ import annotations

import logging
import uuid

import pydantic
import pytest
import redis

import agentexec as ax
from agentexec import cluster
from agentexec.cluster import ClusterURL
from agentexec.connection import REDIS_ERRORS, get_sync_redis, reset_sync_clients
from agentexec.credentials import redact_url
from agentexec.runtime import Runtime


def test_full_form() -> None:
    url = "rediss+cluster://app:p%40ss@n1:7000,n2,[::1]:7002/"
    assert cluster.parse(url) == ClusterURL(
        nodes=(("n1", 7000), ("n2", 6379), ("::1", 7002)),
        username="app",
        password="p@ss",
        ssl=True,
    )


def test_short_form() -> None:
    assert cluster.parse("redis+cluster://127.0.0.1:7000") == ClusterURL(
        nodes=(("127.0.0.1", 7000),)
    )
    assert cluster.parse("redis+cluster://:pw@h/0").password == "pw"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://:secret@/", "no node address"),
        ("redis+cluster://:secret@h:port", "'h:port' has no valid port"),
        ("redis+cluster://:secret@h:70000", "'h:70000' has no valid port"),
        ("redis+cluster://:secret@h/1", "a cluster has only database 0"),
        ("redis+cluster://:secret@h?read_from_replicas=1", "unknown parameters"),
    ],
)
def test_refusals_name_the_problem_and_the_form_never_the_password(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="use the form redis\\+cluster://") as caught:
        cluster.parse(url)
    assert why in str(caught.value)
    assert "secret" not in str(caught.value)


def test_is_cluster_url() -> None:
    assert cluster.is_cluster_url("redis+cluster://h:7000")
    assert cluster.is_cluster_url("REDISS+CLUSTER://h")
    assert not cluster.is_cluster_url("redis://h:6379/0")
    assert not cluster.is_cluster_url("redis+sentinel://h/m")


def test_settings_refuse_a_bad_cluster_url_without_echoing_it() -> None:
    settings = ax.Settings()
    with pytest.raises(pydantic.ValidationError, match="AGENTEXEC_REDIS_URL") as caught:
        settings.redis_url = "redis+cluster://:secret@h:x"
    assert "secret" not in str(caught.value)
    settings.redis_url = "redis+cluster://:secret@h1:7000,h2:7001"


def test_the_redacted_url_hides_the_password() -> None:
    shown = redact_url("redis+cluster://app:pw1@n1:7000,n2:7001")
    assert "pw1" not in shown
    assert shown.startswith("redis+cluster://app:***@n1:7000,n2:7001")


@pytest.mark.parametrize("prefix", ["app", "a{b}c", "{app}", "{x}:app", "app:{x}"])
def test_a_prefix_may_carry_one_hash_tag(prefix: str) -> None:
    assert ax.Settings(key_prefix=prefix).key_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "a{b}{c}", "{}", "a{b", "a}b{", "{{a}}"])
def test_other_braces_are_refused(prefix: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="AGENTEXEC_KEY_PREFIX"):
        ax.Settings(key_prefix=prefix)


def test_a_cluster_puts_every_key_in_the_default_prefixs_slot() -> None:
    url = "redis+cluster://127.0.0.1:7000"
    runtime = Runtime.from_settings(ax.Settings(redis_url=url))
    assert runtime.keys.prefix == "{agentexec}"
    keys = runtime.keys
    names = [
        keys.events,
        keys.queue("q", ax.Priority.HIGH),
        keys.delayed("q"),
        keys.tracker("t", "b"),
        keys.session_items(uuid.uuid4()),
        keys.result("a"),
    ]
    slots = {redis.crc.key_slot(name.encode()) for name in names}
    assert len(slots) == 1
    # Without a cluster, the same settings keep today's keys.
    assert Runtime.from_settings(ax.Settings()).keys.prefix == "agentexec"


def test_a_cluster_keeps_a_tagged_prefix_and_refuses_an_untagged_one_with_the_fix() -> None:
    url = "redis+cluster://127.0.0.1:7000"
    tagged = ax.Settings(redis_url=url, key_prefix="{shop}:tasks")
    assert Runtime.from_settings(tagged).keys.prefix == "{shop}:tasks"
    with pytest.raises(pydantic.ValidationError, match=r"AGENTEXEC_KEY_PREFIX=\{shop\}"):
        ax.Settings(redis_url=url, key_prefix="shop")


def test_an_unreachable_cluster_is_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentexec.connection")
    url = "redis+cluster://:s3cret@127.0.0.1:1"
    try:
        with pytest.raises(REDIS_ERRORS) as caught:
            get_sync_redis(url, ax.Settings(redis_url=url)).ping()
        assert "s3cret" not in str(caught.value)
    finally:
        reset_sync_clients()


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.AskError("3999 127.0.0.1:6381"),
        redis.exceptions.SlotNotCoveredError("Slot 3999 is not covered"),
    ],
)
def test_resharding_and_failover_replies_are_outages(error: Exception) -> None:
    assert isinstance(error, REDIS_ERRORS)
