"""Clients that never read: `python -m tests.bench.slow_clients [--clients 2000]`.

One `agentexec api` process (as deployed; a private redis-server, an empty SQLite read
model). `--clients` raw sockets ask for `/api/events` and never read a byte; events of
`--size` bytes are then appended at `--rate` per second until the API holds none of their
connections (or `--seconds` pass), while a REST route is timed every 100 ms. Printed: the API
process's memory (RSS) at rest, at its peak and at the end; how many feeds it held and how
many it refused with 503 (`--max-feeds`); how long after the first event the last stuck
connection was released; the REST latency with the feeds idle, while the events fill the
stuck clients' buffers, and after the release.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from agentexec import events
from agentexec.embedded import EmbeddedRedis
from agentexec.events import TaskProgress
from agentexec.streams import Keys

AGENT = uuid.uuid4()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def connections_of(pid: int, port: int) -> int:
    """Client connections the API process holds open on `port` (its sockets, not the
    kernel's orphans)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            listening = fields[3] == "0A"
            count += local_port == port and not listening and fields[9] in inodes
    return count


def stuck_client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
    return sock


def refused(sock: socket.socket) -> bool:
    """Whether the server answered 503 (it did within a second, or it streams)."""
    sock.settimeout(1)
    try:
        return sock.recv(64).startswith(b"HTTP/1.1 503")
    except TimeoutError:
        return False


async def time_rest(url: str, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """(when, latency ms) of a REST call every 100 ms."""
    async with httpx.AsyncClient(timeout=120) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            response = await client.get(url)
            samples.append((t0, (time.perf_counter() - t0) * 1000))
            assert response.status_code == 200, response.status_code
            await asyncio.sleep(0.1)


def append(client: object, stream: str, size: int) -> None:
    event = TaskProgress(agent_id=AGENT, task_name="bench", message="x" * size)
    client.xadd(stream, events.entry(event))  # type: ignore[attr-defined]


def latency(samples: list[tuple[float, float]], since: float, until: float) -> str:
    values = sorted(ms for when, ms in samples if since <= when < until)
    if not values:
        return "no call completed"
    p99 = values[max(int(len(values) * 0.99) - 1, 0)]
    return (
        f"median {statistics.median(values):.1f} ms, p99 {p99:.1f} ms, max {values[-1]:.1f} ms"
        f" ({len(values)} calls)"
    )


async def measure(
    args: argparse.Namespace, pid: int, port: int, redis: object, stream: str
) -> None:
    at_rest = rss_mb(pid)
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{port}/api/activities/active/count"
    timer = asyncio.create_task(time_rest(url, samples, stop))
    clients = [stuck_client(port) for _ in range(args.clients)]
    denied = sum(await asyncio.to_thread(lambda: [refused(s) for s in clients]))
    opened = connections_of(pid, port) - 1  # the REST timer's own connection
    idle_from = time.perf_counter()
    await asyncio.sleep(args.idle)  # the feeds open, nothing to send
    peak, released_after = rss_mb(pid), float("nan")
    t0 = time.perf_counter()
    interval = 1 / args.rate
    i = 0
    while time.perf_counter() - t0 < args.seconds:
        await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
        await asyncio.to_thread(append, redis, stream, args.size)
        i += 1
        if i % 5 == 0:
            peak = max(peak, rss_mb(pid))
            if connections_of(pid, port) <= 1:
                released_after = time.perf_counter() - t0
                break
    released = time.perf_counter()
    await asyncio.sleep(args.idle)
    stop.set()
    await timer
    end = rss_mb(pid)
    still = connections_of(pid, port) - 1
    for sock in clients:
        sock.close()
    held = f"{opened:,} connections held, {denied:,} of them refused (503)"
    print(f"| stuck clients | {args.clients:,}: {held} |")
    print(f"| events | {i:,} of {args.size:,} B at {args.rate:g}/s |")
    print(f"| API RSS | {at_rest:.0f} MB at rest, {peak:.0f} MB peak, {end:.0f} MB at the end |")
    left = max(still, 0)
    print(f"| last stuck connection released | {released_after:.1f} s after the first event |")
    print(f"| connections still open at the end | {left:,} |")
    print(f"| REST, feeds open and idle | {latency(samples, idle_from, t0)} |")
    print(f"| REST, events flowing, clients stuck | {latency(samples, t0, released)} |")
    print(f"| REST, after the release | {latency(samples, released, float('inf'))} |")


def run(args: argparse.Namespace) -> None:
    import resource

    import redis
    from sqlalchemy import create_engine

    from agentexec.activity.models import Base

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the API
    server = EmbeddedRedis().start()
    prefix = f"axbench-{uuid.uuid4().hex[:8]}"
    stream = Keys(prefix).events
    client = redis.Redis.from_url(server.url)
    append(client, stream, 10)
    database = Path(tempfile.mkdtemp(prefix="axbench-")) / "api.db"
    Base.metadata.create_all(create_engine(f"sqlite:///{database}"))
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": server.url,
        "AGENTEXEC_DATABASE_URL": f"sqlite:///{database}",
        "AGENTEXEC_KEY_PREFIX": prefix,
        "AGENTEXEC_API_MAX_FEEDS": str(args.max_feeds),
    }
    port = free_port()
    command = [sys.executable, "-m", "agentexec.cli", "--log-level", "WARNING", "api"]
    api = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/activities", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(f"{os.cpu_count()} cores; send timeout 10 s (the default)")
        print("| what | figure |")
        print("| --- | --- |")
        asyncio.run(measure(args, api.pid, port, client, stream))
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--max-feeds", type=int, default=1000, help="AGENTEXEC_API_MAX_FEEDS")
    parser.add_argument("--rate", type=float, default=20, help="Events per second.")
    parser.add_argument("--size", type=int, default=1000, help="Bytes of each event's message.")
    parser.add_argument("--idle", type=float, default=3, help="Seconds of idle feeds, and after.")
    parser.add_argument("--seconds", type=float, default=120, help="Give up after this long.")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
