"""URLs that list several Redis hosts (`redis+sentinel://`, `redis+cluster://`): the parts
both forms share, split where `urlsplit` cannot (it takes one host)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["HostList", "split_hosts"]


@dataclass(frozen=True)
class HostList:
    """The scheme (lower-case), credentials and addresses of a URL that lists hosts, with the
    rest of it (`parts`: its path and query) for the form to read."""

    scheme: str
    addresses: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    parts: SplitResult


def split_hosts(
    url: str,
    schemes: dict[str, bool],
    default_port: int,
    what: str,
    bad: Callable[[str, str], ValueError],
) -> HostList:
    """The parts of `url`, whose scheme must be one of `schemes`; `bad(url, why)` makes the
    `ValueError` for each thing wrong (`what` names a host in it: "node", "Sentinel")."""
    scheme = url.partition("://")[0]
    if scheme.lower() not in schemes:
        raise bad(url, f"scheme {scheme!r} is not one of {', '.join(schemes)}")
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    addresses = tuple(
        _address(url, host.strip(), default_port, what, bad)
        for host in hosts.split(",")
        if host.strip()
    )
    if not addresses:
        raise bad(url, f"no {what} address")
    return HostList(scheme.lower(), addresses, username, password, parts)


def _address(
    url: str, text: str, default_port: int, what: str, bad: Callable[[str, str], ValueError]
) -> tuple[str, int]:
    if text.startswith("["):  # an IPv6 address: [::1]:7000
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    port = port or str(default_port)
    if not host:
        raise bad(url, f"{what} address {text!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(url, f"{what} address {text!r} has no valid port")
    return host, int(port)
