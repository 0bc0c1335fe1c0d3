"""Scraping a Prometheus endpoint in tests: its samples by name and labels."""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .waiting import scaled


class Samples:
    """The samples of one scrape."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[sample.name, frozenset(sample.labels.items())] = sample.value

    def get(self, name: str, **labels: str) -> float | None:
        """The value of sample `name` with exactly `labels`; None when it is absent."""
        return self.values.get((name, frozenset(labels.items())))

    def __getitem__(self, name: str) -> float:
        value = self.get(name)
        assert value is not None, f"no sample {name} without labels"
        return value


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(url, headers=headers, timeout=scaled(10))
    response.raise_for_status()
    return Samples(response.text)


async def scrape_async(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> Samples:
    response = await client.get(url, headers=headers)
    response.raise_for_status()
    return Samples(response.text)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
