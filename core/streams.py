"""Redis key names and consumer-group helpers. Every key starts with the configured prefix.

Keys of one queue share a hash tag, so a queue's streams live on one Redis Cluster slot.
"""

from __future__ import annotations

from uuid import UUID, uuid5

import redis
import redis.asyncio as aioredis

from .errors import BrokerError, GroupMissingError
from .events import Priority

WORKERS_GROUP = "workers"
PROJECTOR_GROUP = "projector"
PROJECTOR_CONSUMER = "projector"
"""Every projector reads as this one consumer, so pending entries outlive their reader."""
AGENT_TTL = 24 * 3600
"""Seconds an agent id stays known to `ax.activity` writes after its latest write (see
`Keys.agent`); the check is skipped inside the task's own handler."""


TRACKER_NAMESPACE = UUID("0f6a3c1e-9b7d-4e55-8c2a-6d1b7e9f4a20")


def tracker_id(name: str, batch_id: str) -> UUID:
    """The agent id of tracker `name`'s batch `batch_id`: its events' agent id, and the id
    whose partition holds its keys and its fan-in (see `agentexec.partitions`)."""
    return uuid5(TRACKER_NAMESPACE, f"{name}/{batch_id}")


class Keys:
    """The key names of one agentexec namespace (`AGENTEXEC_KEY_PREFIX`)."""

    def __init__(self, prefix: str, channels: str | None = None) -> None:
        """`prefix` starts every key; `channels` (default `prefix`) starts the pub/sub channel
        names, which all partitions share (see `agentexec.partitions`)."""
        self.prefix = prefix
        channels = prefix if channels is None else channels
        self.events = f"{prefix}:events"
        self.dead_letters = f"{prefix}:dead"
        self.projector_lease = f"{prefix}:projector:lease"
        self.projector_members = f"{prefix}:projector:members"
        """The running projectors, by when each is deemed stopped unless it says otherwise
        (partition 0's only: they share the partitions' leases)."""
        self.restore_due = f"{prefix}:projector:restore"
        """Set while Redis lost data that the projector has not restored from the archive yet
        (see `agentexec.projector.restore`)."""
        self.result_channel_prefix = f"{channels}:done:"
        self.waiter_channel = f"{channels}:waiter"
        self.cancel_channel = f"{channels}:cancel"

    def queue(self, queue_name: str, priority: Priority) -> str:
        return f"{self.prefix}:{{{queue_name}}}:{priority.value}"

    def queues(self, queue_name: str) -> list[str]:
        """The streams of one queue, highest priority first."""
        return [self.queue(queue_name, p) for p in (Priority.HIGH, Priority.LOW)]

    def delayed(self, queue_name: str) -> str:
        """Sorted set of tasks waiting for a retry (or a delay), scored by due time in ms."""
        return f"{self.prefix}:{{{queue_name}}}:delayed"

    def schedule_channel(self, queue_name: str) -> str:
        """Where enqueuers announce a delayed task's due time to the queue's workers."""
        return f"{self.prefix}:{{{queue_name}}}:scheduled"

    def lock_holders(self, queue_name: str, lock: str) -> str:
        """Sorted set of the agent ids holding task lock `lock` of a queue (`key:<key>` or
        `tenant:<tenant>`, see `agentexec.locks`), scored by when each hold expires (ms)."""
        return f"{self.prefix}:{{{queue_name}}}:held-by:{lock}"

    def lock_waiting(self, queue_name: str, lock: str) -> str:
        """List of the tasks parked until task lock `lock` of a queue has room."""
        return f"{self.prefix}:{{{queue_name}}}:waiting-for:{lock}"

    def lock_index(self, queue_name: str) -> str:
        """Sorted set of a queue's locks that have waiters, scored by when a hold expires."""
        return f"{self.prefix}:{{{queue_name}}}:locks"

    def lock_waiters(self, queue_name: str) -> str:
        """Hash of a queue's parked tasks: agent id -> the lock it waits for."""
        return f"{self.prefix}:{{{queue_name}}}:lock-waiters"

    def dedup(self, key: str) -> str:
        return f"{self.prefix}:dedup:{key}"

    def cancel_marker(self, agent_id: UUID | str) -> str:
        return f"{self.prefix}:cancel:{agent_id}"

    def agent(self, agent_id: UUID | str) -> str:
        """Marks an agent id as known: set when its task is queued or its activity created."""
        return f"{self.prefix}:agent:{agent_id}"

    def result(self, agent_id: UUID | str) -> str:
        return f"{self.prefix}:result:{agent_id}"

    def checkpoints(self, agent_id: UUID | str) -> str:
        """Hash of the conversations an agent's runs saved after their latest completed
        turn, by run name (see `Broker.checkpoint_held`)."""
        return f"{self.prefix}:checkpoints:{agent_id}"

    def held(self, agent_id: UUID | str) -> str:
        """Who runs a task whose entry Redis lost (see the RENEW script), for a lease."""
        return f"{self.prefix}:held:{agent_id}"

    def result_channel(self, agent_id: UUID | str) -> str:
        return f"{self.result_channel_prefix}{agent_id}"

    def tracker(self, name: str, batch_id: str) -> str:
        """Hash of a fan-out tracker's counts and fan-in task (see `ax.Tracker`)."""
        return f"{self.prefix}:tracker:{{{name}:{batch_id}}}"

    def tracker_counted(self, name: str, batch_id: str) -> str:
        """Set of the keys (child agent ids) a tracker has already counted."""
        return f"{self.tracker(name, batch_id)}:counted"

    def session_items(self, session_key: UUID) -> str:
        """List of a conversation session's items (their JSON, oldest first), by the session's
        agent id (see `agentexec.sessions`)."""
        return f"{self.prefix}:session:{{{session_key}}}:items"

    def session_version(self, session_key: UUID) -> str:
        """How many changes a session's items have had: the version its writers compare."""
        return f"{self.prefix}:session:{{{session_key}}}:version"


def delayed_member(priority: Priority, event_json: bytes) -> bytes:
    """A task's member in its queue's delayed set: the priority's stream ('h:' or 'l:', see
    the PROMOTE script), then its `task.queued` event JSON."""
    return (b"h:" if priority is Priority.HIGH else b"l:") + event_json


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start: str = "0") -> None:
    """Create `group` on `stream` (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def refusal(error: redis.ResponseError, what: str) -> BrokerError:
    """The agentexec error for Redis refusing `what` (not an outage: see `REDIS_ERRORS`)."""
    if is_missing_group(error):
        return GroupMissingError(f"{what}: the stream or its consumer group is gone ({error})")
    return BrokerError(f"{what}: Redis refused it ({error})")


def is_missing_group(error: redis.ResponseError) -> bool:
    """True when a command failed because the stream or group is gone (Redis came back empty,
    or the stream was deleted under a blocked read)."""
    message = str(error)
    return "NOGROUP" in message or "UNBLOCKED" in message
