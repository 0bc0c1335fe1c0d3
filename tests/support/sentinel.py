"""A Redis Sentinel setup of its own for a test: one primary, one replica and three Sentinels,
all `redis-server` processes on free ports (no Docker), stopped whatever happens.

`url` is the `redis+sentinel://` URL of the service; `failover()` asks the Sentinels for a
failover, `kill_primary()` SIGKILLs the primary and lets them elect a new one. Both first fence
the writes the replica has not received yet (see `fence`), since Redis replicates
asynchronously: what a primary acknowledged and did not send before it stopped being one is
lost, whatever the client does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import redis

from .redis_servers import Node
from .waiting import wait_for

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelSetup:
    """One primary, one replica and three Sentinels monitoring them as `SERVICE` (quorum 2)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agentexec-sentinel-"))
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []

    def start(self) -> SentinelSetup:
        try:
            primary = Node(self.dir, "server-0", [], sentinel=False)
            self.servers.append(primary)
            replica = Node(
                self.dir, "server-1", [f"replicaof 127.0.0.1 {primary.port}"], sentinel=False
            )
            self.servers.append(replica)
            for server in self.servers:
                server.wait_started()
            monitor = [
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
            for i in range(3):
                self.sentinels.append(Node(self.dir, f"sentinel-{i}", monitor, sentinel=True))
            for node in self.sentinels:
                node.wait_started()
            self.wait_ready(primary.port)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def server(self, port: int) -> Node:
        return next(node for node in self.servers if node.port == port)

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers sees it."""
        for node in self.sentinels:
            try:
                address = node.client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.ConnectionError:
                continue
            if address:
                return int(address[1])
        raise RuntimeError("no Sentinel answers")

    def wait_ready(self, primary: int, timeout: float = 30) -> None:
        """Wait until every Sentinel names `primary`, knows the two others and lists a live
        replica, and every other running server replicates from `primary` (what a failover
        needs)."""

        def sentinel_ready(node: Node) -> bool:
            state: dict[str, Any] = node.client.sentinel_master(SERVICE)
            if int(state["port"]) != primary or state["num-other-sentinels"] < 2:
                return False
            if state["is_sdown"] or state["is_odown"] or state.get("is_failover_in_progress"):
                return False
            return any(
                not r["is_sdown"] and not r["is_disconnected"]
                for r in node.client.sentinel_slaves(SERVICE)
            )

        def replicating(node: Node) -> bool:
            info = node.client.info("replication")
            return (
                info["role"] == "slave"
                and int(info["master_port"]) == primary
                and info["master_link_status"] == "up"
            )

        def ready() -> bool:
            replicas = [n for n in self.servers if n.port != primary and n.process.poll() is None]
            return all(map(replicating, replicas)) and all(map(sentinel_ready, self.sentinels))

        wait_for(
            ready,
            timeout=timeout,
            what=f"the Sentinels to agree on primary {primary} and see its replica",
        )

    def fence(self, primary: Node) -> None:
        """Pause writes on `primary` (10 s at most) and wait until its replica has all it
        acknowledged: the failover that follows loses no acknowledged write."""
        primary.client.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        offset = int(primary.client.info("replication")["master_repl_offset"])
        replicas = [node for node in self.servers if node is not primary]

        def replicated() -> bool:
            return all(
                int(node.client.info("replication").get("slave_repl_offset", -1)) >= offset
                for node in replicas
                if node.process.poll() is None
            )

        wait_for(replicated, timeout=10, what=f"the replica to reach offset {offset}")

    def failover(self) -> int:
        """`SENTINEL FAILOVER` (after `fence`); the new primary's port once every Sentinel
        names it and the old primary replicates from it (ready for another failover).

        Sentinel itself reconfigures a former primary that is still up only about 10 s after
        the promotion, and until then it accepts writes that are lost (docs/operations.md);
        here the old primary is made a replica as soon as the new one is promoted, while its
        writes are still paused: the paused writes then fail with READONLY, and its blocked
        reads are released with an error, as after Sentinel's own reconfiguration."""
        old = self.server(self.primary_port())
        self.fence(old)
        self.sentinels[0].client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        new = next(node.port for node in self.servers if node is not old)
        self._wait_promoted(new)
        old.client.execute_command("REPLICAOF", "127.0.0.1", str(new))
        old.client.execute_command("CLIENT", "UNPAUSE")
        self.wait_ready(new)
        return new

    def kill_primary(self) -> int:
        """SIGKILL the primary (after `fence`) and wait until the Sentinels promoted the replica;
        the killed server stays down. The new primary's port."""
        old = self.server(self.primary_port())
        self.fence(old)
        old.kill()
        new = next(node.port for node in self.servers if node is not old)
        self._wait_promoted(new)
        return new

    def _wait_promoted(self, port: int) -> None:
        def promoted() -> bool:
            named = all(
                int(node.client.sentinel_get_master_addr_by_name(SERVICE)[1]) == port
                for node in self.sentinels
            )
            return named and self.server(port).client.info("replication")["role"] == "master"

        wait_for(promoted, timeout=30, what=f"the Sentinels to promote {port}")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            try:
                node.stop()
            except Exception:  # stop the others whatever one does
                node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
