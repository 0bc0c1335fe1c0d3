"""The API's SSE feeds through a `redis+cluster://` URL (issue 14, first step: every key in
the prefix's slot): tests of the single server's feed suite, imported unchanged, run with
agentexec pointed at a real 3-primary Redis Cluster by this module's `redis_conf`."""

from __future__ import annotations

from tests.integration.api.test_feeds import (  # noqa: F401
    test_agent_feed_is_its_history_then_live_then_ends,
    test_live_messages_carry_id_type_and_the_event,
    test_older_than_redis_comes_from_the_archive,
    test_resume_racing_appends_loses_nothing,
    test_resume_sends_every_later_event_once_in_order_then_live,
)
from tests.support.cluster import needs_redis_server, redis_cluster, redis_conf  # noqa: F401

pytestmark = [needs_redis_server]
