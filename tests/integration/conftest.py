from __future__ import annotations

from collections.abc import Iterator

import pytest

import agentexec as ax
from tests.apps import basic


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
