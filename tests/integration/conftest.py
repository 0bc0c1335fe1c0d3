from __future__ import annotations

from collections.abc import Iterator

import pytest

import agentexec as ax
from tests.apps import basic


@pytest.fixture
def fast_retries(redis_conf: str) -> None:
    """Retries after 0.05 s, backing off to 0.2 s at most, so that tests of retries are quick."""
    ax.CONF.retry_backoff = 0.05
    ax.CONF.retry_backoff_max = 0.2


@pytest.fixture
def running_pool(redis_conf: str) -> Iterator[ax.Pool]:
    """The test app's pool (2 worker processes), running against the test Redis."""
    basic.pool.start()
    try:
        yield basic.pool
    finally:
        basic.pool.shutdown()


@pytest.fixture
def pipeline_pool(redis_conf: str) -> Iterator[ax.Pool]:
    """The pipelines' pool (queue "pipelines"), running against the test Redis."""
    from tests.apps import workflows  # defines pipelines: only for the tests that run them

    workflows.pipeline_pool.start()
    try:
        yield workflows.pipeline_pool
    finally:
        workflows.pipeline_pool.shutdown()
