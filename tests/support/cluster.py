"""A Redis Cluster of its own for a test: three primaries (no replicas), `redis-server
--cluster-enabled yes` processes on free ports (no Docker), stopped whatever happens.

The slots are assigned by hand (CLUSTER ADDSLOTSRANGE, then CLUSTER MEET): the same as
`redis-cli --cluster create ... --cluster-replicas 0` without needing its prompts. `url` is
the `redis+cluster://` URL naming every node.
"""

from __future__ import annotations

import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentexec as ax

from .redis_servers import Node
from .waiting import wait_for

SLOTS = 16384
BUS_OFFSET = 10000
"""A cluster node's bus port is its port plus this."""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A port that is free now, below 55536, whose bus port (`port + 10000`) is free too."""
    while True:
        port = random.randint(20000, 55535 - BUS_OFFSET)
        if port in taken or port + BUS_OFFSET in taken:
            continue
        if _free(port) and _free(port + BUS_OFFSET):
            return port


class ClusterNode(Node):
    """One `redis-server --cluster-enabled yes` process."""

    def __init__(self, directory: Path, name: str, port: int) -> None:
        config = [
            "cluster-enabled yes",
            f"cluster-config-file {directory / name / 'nodes.conf'}",
            "cluster-node-timeout 2000",
            "maxmemory-policy noeviction",
        ]
        super().__init__(directory, name, config, sentinel=False, port=port)


class RedisClusterSetup:
    """Three primaries sharing the 16384 slots evenly."""

    def __init__(self, masters: int = 3, *, replicas: bool = False) -> None:
        self.masters = masters
        self.dir = Path(tempfile.mkdtemp(prefix="agentexec-cluster-"))
        self.nodes: list[ClusterNode] = []
        """The primaries as started (a failover makes a replica the primary of one's slots)."""
        self.replicas: list[ClusterNode] = []
        """With `replicas`, one for each primary, in the same order."""
        self._with_replicas = replicas

    def start(self) -> RedisClusterSetup:
        try:
            taken: set[int] = set()
            for i in range(self.masters):
                port = free_cluster_port(taken)
                taken.update((port, port + BUS_OFFSET))
                self.nodes.append(ClusterNode(self.dir, f"node-{i}", port))
            for node in self.nodes:
                node.wait_started()
            share = SLOTS // self.masters
            for i, node in enumerate(self.nodes):
                last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * share - 1
                node.client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
            for node in self.nodes[1:]:
                self.nodes[0].client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            self.wait_ok()
            if self._with_replicas:
                self._add_replicas(taken)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_replicas(self, taken: set[int]) -> None:
        for i, primary in enumerate(self.nodes):
            port = free_cluster_port(taken)
            taken.update((port, port + BUS_OFFSET))
            replica = ClusterNode(self.dir, f"replica-{i}", port)
            self.replicas.append(replica)
            replica.wait_started()
            replica.client.execute_command("CLUSTER", "MEET", "127.0.0.1", primary.port)
        for primary, replica in zip(self.nodes, self.replicas, strict=True):
            primary_id = self.node_id(primary)

            def knows(replica: ClusterNode = replica, primary_id: str = primary_id) -> bool:
                nodes = replica.client.execute_command("CLUSTER", "NODES")
                return primary_id in (nodes.decode() if isinstance(nodes, bytes) else str(nodes))

            wait_for(knows, timeout=30, what=f"{replica.name} to learn of its primary")
            replica.client.execute_command("CLUSTER", "REPLICATE", primary_id)

        def replicating(replica: ClusterNode) -> bool:
            info = replica.client.info("replication")
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        wait_for(lambda: all(map(replicating, self.replicas)), timeout=30, what="replicas")
        self.wait_ok(known=2 * self.masters)

    def wait_ok(self, timeout: float = 30, known: int | None = None) -> None:
        """Wait until every running node reports `cluster_state:ok` and knows every other node
        (a killed one stays known: marked failed)."""

        def ok(node: ClusterNode) -> bool:
            info = node.client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line.strip())
            return fields.get("cluster_state", "").strip() == "ok" and int(
                fields.get("cluster_known_nodes", 0)
            ) == (known or self.masters)

        wait_for(
            lambda: all(map(ok, self.running())),
            timeout=timeout,
            what=f"the {self.masters} cluster nodes to report cluster_state:ok",
        )

    def running(self) -> list[ClusterNode]:
        """The nodes whose process has not exited."""
        return [n for n in [*self.nodes, *self.replicas] if n.process.poll() is None]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def node_of_slot(self, slot: int) -> ClusterNode:
        share = SLOTS // self.masters
        return self.nodes[min(slot // share, self.masters - 1)]

    def node_id(self, node: ClusterNode) -> str:
        return str(node.client.execute_command("CLUSTER", "MYID").decode())

    def migrate_slot(self, slot: int, target: ClusterNode, batch: int = 100) -> None:
        """Move `slot` and its keys to `target` as a resharding does (IMPORTING/MIGRATING,
        MIGRATE of every key, `batch` at a time, then SETSLOT NODE everywhere): clients meet
        MOVED, ASK and (a script whose keys are split between the two) TRYAGAIN."""
        source = next(n for n in self.nodes if n is not target and self._serves(n, slot))
        target.client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        source.client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        while keys := source.client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            source.client.execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
        for node in [target, source, *(n for n in self.nodes if n not in (target, source))]:
            node.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.node_id(target))
        self.wait_ok(known=len(self.nodes) + len(self.replicas))

    def failover(self, primary: ClusterNode) -> ClusterNode:
        """`CLUSTER FAILOVER` on `primary`'s replica (it syncs first: no write is lost); returns
        the replica, once every node sees it serve the slots and the cluster is ok."""
        replica = self.replicas[self.nodes.index(primary)]
        replica.client.execute_command("CLUSTER", "FAILOVER")

        def promoted() -> bool:
            return bool(replica.client.info("replication")["role"] == "master")

        wait_for(promoted, timeout=30, what=f"{replica.name} to become a primary")
        self.wait_ok(known=len(self.nodes) + len(self.replicas))
        return replica

    def kill_primary(self, primary: ClusterNode) -> ClusterNode:
        """SIGKILL `primary` (after `fence`): no CLUSTER FAILOVER, the other primaries see it
        fail after `cluster-node-timeout` and its replica is elected in its place. The replica,
        once every running node sees it serve the slots and the cluster is ok."""
        replica = self.replicas[self.nodes.index(primary)]
        self.fence(primary, replica)
        primary.kill()

        def promoted() -> bool:
            return bool(replica.client.info("replication")["role"] == "master")

        wait_for(
            promoted, timeout=30, what=f"{replica.name} to be elected in {primary.name}'s place"
        )
        self.wait_ok(known=len(self.nodes) + len(self.replicas))
        return replica

    def fence(self, primary: ClusterNode, replica: ClusterNode) -> None:
        """Pause writes on `primary` (10 s at most) and wait until `replica` has all it
        acknowledged: Redis replicates asynchronously, and what a primary acknowledged but had
        not sent when it died is lost whatever its clients do (docs/operations.md, "Sentinel")."""
        primary.client.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        offset = int(primary.client.info("replication")["master_repl_offset"])

        def replicated() -> bool:
            return int(replica.client.info("replication").get("slave_repl_offset", -1)) >= offset

        wait_for(replicated, timeout=10, what=f"{replica.name} to reach offset {offset}")

    def primary_of_slot(self, slot: int) -> ClusterNode:
        """The node serving `slot` now (after failovers and migrations too)."""
        return next(n for n in self.running() if self._serves(n, slot))

    def _serves(self, node: ClusterNode, slot: int) -> bool:
        # CLUSTER SLOTS: start, end, then the primary's [host, port, id] and its replicas'.
        for start, end, primary, *_ in node.client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1]) == node.port
        return False

    def stop(self) -> None:
        for node in [*self.nodes, *self.replicas]:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterSetup]:
    """A 3-primary cluster shared by a module's tests (each has its own key prefix)."""
    setup = RedisClusterSetup().start()
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def redis_conf(redis_cluster: RedisClusterSetup) -> str:
    """In place of the single server's `redis_conf`: agentexec pointed at the cluster, the
    test's key prefix made a hash tag first (a cluster refuses an untagged one)."""
    ax.CONF.key_prefix = "{" + ax.CONF.key_prefix + "}"
    ax.CONF.redis_url = redis_cluster.url
    return redis_cluster.url


needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="Redis Cluster tests start redis-server processes: install Redis 7 (redis-server)",
)
