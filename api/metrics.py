"""`GET /metrics`: the Prometheus metrics of one router (`router(metrics=True)`): its open
SSE feeds. Task counters and durations come from the projector, queue gauges from the pools
(see `agentexec.metrics` and docs/metrics.md), so that nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .responses import OpenFeeds
from .state import Live

__all__ = ["FeedCollector", "registry_of", "scrape"]


class FeedCollector:
    """`agentexec_sse_feeds_open` and `agentexec_sse_feeds_limit` of one router, read at
    scrape time."""

    def __init__(self, feeds: OpenFeeds) -> None:
        self.feeds = feeds

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "agentexec_sse_feeds_open", "SSE feeds this router serves now.", value=self.feeds.count
        )
        yield GaugeMetricFamily(
            "agentexec_sse_feeds_limit",
            "SSE feeds this router may serve at once (max_feeds).",
            value=self.feeds.limit,
        )


def registry_of(feeds: OpenFeeds) -> CollectorRegistry:
    """A registry of a router's metrics."""
    registry = CollectorRegistry()
    registry.register(FeedCollector(feeds))
    return registry


def scrape(request: Request, live: Live) -> Response:
    """`GET /metrics`: the router's metrics in the format the scraper accepts. A plain
    function: FastAPI runs it on a thread, so that a collector may block."""
    assert live.registry is not None
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(live.registry), media_type=content_type)
