"""Live API benchmark: `python -m tests.bench.sse [--clients 100 1000] [--rate 100]`.

For each N, against one `agentexec api` process and, in the same run, a bare sse-starlette
endpoint (one XREAD loop, one unbounded queue per client, nothing else):

- latency: events appended at `--rate` per second for `--seconds`; each carries its append
  time (ns) in its message. 10 probe clients parse every frame and record append-to-receipt;
  the other N-10 clients run in a separate process and only count frames.
- throughput: a burst of `--burst` events appended at once; delivered events/s is
  N x burst / (first append -> the last client has all of them).

With `--partitions P` (AGENTEXEC_PARTITIONS) the events go round P partitions' logs and
`/api/events` merges them, its ids cursors; the bare endpoint (one log) is then left out.

A private redis-server is started; the read model is an empty SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agentexec import events
from agentexec.embedded import EmbeddedRedis
from agentexec.events import TaskProgress
from agentexec.partitions import Partitions

PROBES = 10
AGENT = uuid.uuid4()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the bare endpoint -------------------------------------------------------------------


def bare_app(redis_url: str, stream: str) -> Any:
    """The least an SSE endpoint can do to push Redis Stream entries to its clients."""
    import redis.asyncio as aioredis
    from fastapi import FastAPI
    from sse_starlette import EventSourceResponse, ServerSentEvent

    app = FastAPI()
    queues: set[asyncio.Queue[tuple[bytes, bytes]]] = set()
    reader: list[asyncio.Task[None]] = []

    async def read() -> None:
        client = aioredis.Redis.from_url(redis_url)
        last = (await client.xinfo_stream(stream))["last-generated-id"]
        while True:
            reply: Any = await client.xread({stream: last}, count=1000, block=5000)
            for _key, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    for queue in queues:
                        queue.put_nowait((entry_id, fields[b"event"]))

    @app.get("/events")
    async def feed() -> EventSourceResponse:
        if not reader:
            reader.append(asyncio.create_task(read()))
        queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()

        async def frames() -> AsyncIterator[ServerSentEvent]:
            queues.add(queue)
            try:
                while True:
                    entry_id, data = await queue.get()
                    yield ServerSentEvent(data.decode(), id=entry_id.decode())
            finally:
                queues.discard(queue)

        return EventSourceResponse(frames())

    return app


def serve_bare(port: int, redis_url: str, stream: str) -> None:
    import uvicorn

    uvicorn.run(bare_app(redis_url, stream), port=port, log_level="warning", access_log=False)


# --- clients -----------------------------------------------------------------------------


async def connect(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return reader, writer


async def count_frames(reader: asyncio.StreamReader, counts: list[int], index: int) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            return
        counts[index] += data.count(b"\nid: ") + data.startswith(b"id: ")


async def probe(reader: asyncio.StreamReader, latencies: list[float]) -> None:
    marker = b'"message":"'
    buffer = b""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        now = time.time_ns()
        buffer += data
        *frames, buffer = buffer.split(b"\r\n\r\n")
        for frame in frames:
            at = frame.find(marker)
            if at >= 0:
                sent = int(frame[at + len(marker) : frame.index(b'"', at + len(marker))])
                latencies.append((now - sent) / 1e6)


def load_clients(port: int, path: str, n: int, pipe: Any) -> None:
    """A process holding n counting clients; reports its total on request."""

    async def main() -> None:
        counts = [0] * n
        connections = [await connect(port, path) for _ in range(n)]
        tasks = [
            asyncio.create_task(count_frames(r, counts, i)) for i, (r, _w) in enumerate(connections)
        ]
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                break
            pipe.send(sum(counts))
        for task in tasks:
            task.cancel()
        for _r, w in connections:
            w.close()

    asyncio.run(main())


# --- the measurement ---------------------------------------------------------------------


class Logs:
    """The logs the benchmark appends to: events go round the P partitions, each event's agent
    in the partition whose log it is appended to (one agent per partition)."""

    def __init__(self, prefix: str, count: int) -> None:
        partitions = Partitions(prefix, count)
        self.streams = [partitions.keys(p).events for p in partitions]
        self.agents = [partitions.place(AGENT, p) for p in partitions]
        self.next = 0

    def append(self, client: Any, count: int) -> None:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(count):
                p = self.next % len(self.streams)
                self.next += 1
                event = TaskProgress(
                    agent_id=self.agents[p], task_name="bench", message=str(time.time_ns())
                )
                pipe.xadd(self.streams[p], events.entry(event))
            pipe.execute()


async def measure(
    port: int, path: str, n: int, logs: Logs, redis_client: Any, args: argparse.Namespace
) -> dict[str, float]:
    parent, child = multiprocessing.Pipe()
    loader = multiprocessing.get_context("spawn").Process(
        target=load_clients, args=(port, path, n - PROBES, child)
    )
    loader.start()
    assert parent.recv() == "ready"
    latencies: list[float] = []
    probes = [await connect(port, path) for _ in range(PROBES)]
    tasks = [asyncio.create_task(probe(r, latencies)) for r, _w in probes]
    await asyncio.sleep(0.5)  # let every subscription settle before measuring

    def delivered() -> int:
        parent.send("count")
        return int(parent.recv())

    # Latency under a steady rate.
    interval = 1 / args.rate
    start = time.perf_counter()
    for i in range(int(args.rate * args.seconds)):
        await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
        await asyncio.to_thread(logs.append, redis_client, 1)
    expected_probe = PROBES * int(args.rate * args.seconds)
    deadline = time.monotonic() + 30
    # The probes append to a plain list; polling it keeps them free of any signalling cost.
    while len(latencies) < expected_probe and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    steady = sorted(latencies)

    # Throughput of a burst.
    base = await asyncio.to_thread(delivered)
    probe_base = len(latencies)
    total = n * args.burst
    t0 = time.perf_counter()
    await asyncio.to_thread(logs.append, redis_client, args.burst)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(delivered) - base + len(latencies) - probe_base
        if got >= total:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    parent.send("stop")
    loader.join(10)
    for task in tasks:
        task.cancel()
    for _r, w in probes:
        w.close()
    return {
        "median_ms": statistics.median(steady) if steady else float("nan"),
        "p99_ms": steady[int(len(steady) * 0.99) - 1] if steady else float("nan"),
        "received": len(steady) / max(expected_probe, 1),
        "events_per_s": got / elapsed,
        "complete": got / total,
    }


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def run(args: argparse.Namespace) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 clients; inherited
    server = EmbeddedRedis().start()
    prefix = f"axbench-{uuid.uuid4().hex[:8]}"
    logs = Logs(prefix, args.partitions)
    stream = logs.streams[0]
    import redis

    client = redis.Redis.from_url(server.url)
    logs.append(client, args.partitions)
    database = Path(tempfile.mkdtemp(prefix="axbench-")) / "api.db"
    from sqlalchemy import create_engine

    from agentexec.activity.models import Base

    Base.metadata.create_all(create_engine(f"sqlite:///{database}"))
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": server.url,
        "AGENTEXEC_DATABASE_URL": f"sqlite:///{database}",
        "AGENTEXEC_KEY_PREFIX": prefix,
        "AGENTEXEC_PARTITIONS": str(args.partitions),
    }
    api_port, bare_port = free_port(), free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentexec.cli",
                "--log-level",
                "WARNING",
                "api",
                "--port",
                str(api_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
        multiprocessing.get_context("spawn").Process(
            target=serve_bare, args=(bare_port, server.url, stream)
        ),
    ]
    processes[1].start()  # type: ignore[union-attr]
    try:
        wait_http(f"http://127.0.0.1:{api_port}/api/activities")
        wait_http(f"http://127.0.0.1:{bare_port}/docs")
        print(
            f"rate {args.rate}/s for {args.seconds}s, burst {args.burst}, "
            f"{args.partitions} partition(s); {os.cpu_count()} cores"
        )
        print("| clients | endpoint | latency median | latency p99 | delivered events/s |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for n in args.clients:
            endpoints = [("agentexec", api_port, "/api/events")]
            if args.partitions == 1:  # the bare endpoint reads one log
                endpoints.append(("bare sse-starlette", bare_port, "/events"))
            for name, port, path in endpoints:
                r = asyncio.run(measure(port, path, n, logs, client, args))
                note = "" if r["complete"] >= 1 and r["received"] >= 1 else " (incomplete!)"
                print(
                    f"| {n:,} | {name} | {r['median_ms']:.2f} ms | {r['p99_ms']:.2f} ms "
                    f"| {r['events_per_s']:,.0f}{note} |",
                    flush=True,
                )
    finally:
        processes[0].send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        processes[1].terminate()  # type: ignore[union-attr]
        for process in processes:
            process.wait(15) if isinstance(process, subprocess.Popen) else process.join(15)
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rate", type=float, default=100, help="Events/s in the latency run.")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--burst", type=int, default=500, help="Events in the throughput run.")
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="AGENTEXEC_PARTITIONS: events go round the partitions, /api/events merges them.",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
