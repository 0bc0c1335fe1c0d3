"""Shared fixtures: a real Redis server for the session (a 3-primary Redis Cluster with
AGENTEXEC_TEST_TOPOLOGY=cluster, see tests/support/topology.py), and a fresh key namespace per
test; pytest-timeout's limit stretched by load like every other deadline."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

import agentexec as ax
from agentexec.embedded import EmbeddedRedis
from tests.support import topology
from tests.support.waiting import scaled

if topology.CLUSTER:
    # Every test runs with a partition per primary; subprocesses that inherit this process's
    # environment too (tests that build one from scratch take `topology.settings_env()`).
    os.environ["AGENTEXEC_PARTITIONS"] = str(topology.PARTITIONS)
    ax.CONF.partitions = topology.PARTITIONS

_BASE_TIMEOUT = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # Before pytest-timeout's own wrapper reads the limit: the test's marker, else the option.
    if not item.config.pluginmanager.hasplugin("timeout"):
        yield
        return
    if _BASE_TIMEOUT not in item.stash:
        marker = item.get_closest_marker("timeout")
        base = None
        if marker is not None:
            base = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        if base is None:
            base = item.config.getoption("timeout", None)
        if base is None:
            base = item.config.getini("timeout") or 0
        item.stash[_BASE_TIMEOUT] = float(base)
    if item.stash[_BASE_TIMEOUT] > 0:
        item.add_marker(pytest.mark.timeout(scaled(item.stash[_BASE_TIMEOUT])), append=False)
    yield


def _docker_redis_url() -> Iterator[str] | None:
    try:
        import docker  # noqa: F401
        from testcontainers.redis import RedisContainer
    except ImportError:
        return None
    try:
        container = RedisContainer("redis:7")
        container.start()
    except Exception:
        return None
    return container  # type: ignore[return-value]


_MULTI_NODE = {"redis_cluster", "replicated_cluster", "sentinels"}
"""Fixtures that start a Redis Cluster or a Sentinel setup: several redis-server processes."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests on a cluster or Sentinel setup of their own are marked `topology`: `make check`
    # leaves them to CI (make test-topologies, and the fault suite), to stay a quick command.
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = list(callspec.params.values()) if callspec is not None else []
        if _MULTI_NODE & set(getattr(item, "fixturenames", ())) or "cluster" in params:
            item.add_marker(pytest.mark.topology)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """AGENTEXEC_TEST_REDIS_URL if set; else a private redis-server from PATH; else a
    testcontainers Redis where Docker runs. With AGENTEXEC_TEST_TOPOLOGY=cluster: a private
    3-primary Redis Cluster (its `redis+cluster://` URL)."""
    if topology.CLUSTER:
        from tests.support.cluster import RedisClusterSetup

        if not shutil.which("redis-server"):
            pytest.fail("AGENTEXEC_TEST_TOPOLOGY=cluster starts redis-server processes: install it")
        cluster = RedisClusterSetup().start()
        try:
            yield cluster.url
        finally:
            cluster.stop()
        return
    url = os.environ.get("AGENTEXEC_TEST_REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server"):
        server = EmbeddedRedis().start(timeout=scaled(10))
        try:
            yield server.url
        finally:
            server.close()
        return
    container = _docker_redis_url()
    if container is None:
        pytest.skip("no Redis: set AGENTEXEC_TEST_REDIS_URL, install redis-server, or run Docker")
    try:
        host = container.get_container_host_ip()  # type: ignore[attr-defined]
        port = container.get_exposed_port(6379)  # type: ignore[attr-defined]
        yield f"redis://{host}:{port}/0"
    finally:
        container.stop()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _isolated_settings() -> Iterator[None]:
    """Every test gets its own settings (restored afterwards) and its own Redis namespace."""
    saved = ax.CONF.model_dump()
    ax.CONF.key_prefix = f"axtest-{uuid.uuid4().hex[:10]}"
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ax.CONF, name, value)


@pytest.fixture
def redis_conf(redis_url: str) -> str:
    """Point agentexec at the test Redis; returns its URL."""
    ax.CONF.redis_url = redis_url
    return redis_url


@pytest.fixture(autouse=True)
def _no_read_model_freshness_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of the read model look at Redis once for a stale log (agentexec.activity.freshness);
    a test that reads without pointing agentexec at the test Redis must not reach the system
    one, so the look is off unless a test turns it on."""
    from agentexec.activity import freshness

    monkeypatch.setattr(freshness, "_done", True)
