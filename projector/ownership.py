"""Exclusive ownership of the event log by one projector at a time, and reads fenced by it.

The owner holds a Redis lease key (SET NX PX) and renews it; when it dies the lease expires
and another projector takes over. Reads from the consumer group run in a Lua script that first
checks the lease, so a projector that lost its lease (paused, partitioned) cannot take entries
any more: every entry it took earlier is still pending under the shared consumer name, where
the next owner finds it. Commits are fenced separately by the SQL checkpoint (see
`checkpoints.advance`). The lease's Redis commands are the Broker's (`Broker.log_lease`).
"""

from __future__ import annotations

from agentexec.broker import LogEntries, LogLease
from agentexec.streams import PROJECTOR_CONSUMER

__all__ = ["CONSUMER", "Entries", "Lease"]

CONSUMER = PROJECTOR_CONSUMER
Entries = LogEntries
Lease = LogLease
