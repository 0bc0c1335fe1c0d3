"""The Redis the tests run against: `AGENTEXEC_TEST_TOPOLOGY=single` (the default: one private
redis-server, one partition) or `cluster` (a real 3-primary Redis Cluster and three
partitions, one on each primary: `make test-cluster`).

In cluster mode the session's `redis_url` is the cluster's `redis+cluster://` URL, every test
runs with `ax.CONF.partitions = PARTITIONS`, and `AGENTEXEC_PARTITIONS` is in this process's
environment for the subprocesses that inherit it (a test that builds a subprocess's
environment from scratch passes `AGENTEXEC_PARTITIONS` beside `AGENTEXEC_KEY_PREFIX`).
"""

from __future__ import annotations

import os

import pytest

TOPOLOGY = os.environ.get("AGENTEXEC_TEST_TOPOLOGY", "single").strip().lower() or "single"
if TOPOLOGY not in ("single", "cluster"):
    raise ValueError(
        f"AGENTEXEC_TEST_TOPOLOGY has value {TOPOLOGY!r}; use 'single' (the default) or 'cluster'"
    )
CLUSTER = TOPOLOGY == "cluster"
PARTITIONS = 3 if CLUSTER else 1
"""One partition per primary of the test cluster (tests/support/cluster.py starts three)."""


def single_log_only(reason: str) -> pytest.MarkDecorator:
    """Skip a test in cluster mode: it is about the single log's layout (`reason` says why
    and which test covers the partitioned case)."""
    return pytest.mark.skipif(CLUSTER, reason=f"single-log layout: {reason}")
