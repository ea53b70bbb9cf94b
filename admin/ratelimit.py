"""IP rate limiting for the admin server: a token bucket per client address, on Trio time.

Memory stays bounded under a flood of addresses: a bucket that has been idle long enough to
refill completely is indistinguishable from a new one, so it is forgotten; and at most
``max_clients`` buckets are kept, the least recently seen going first. (Evicting a throttled
address under a flood of ``max_clients`` others forgives it early: an attacker with that many
addresses is past what a per-address limit can stop anyway.)
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from actors import TokenBucketCore
from admin.errors import refuse

__all__ = ["ClientBuckets", "IpRateLimit", "RateLimitStatistics", "client_address"]

# An X-Forwarded-For entry longer than this is not an address; keep keys small.
_MAX_KEY = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimitStatistics:
    clients: int  # buckets held now
    max_clients: int
    allowed: int
    limited: int
    evicted_idle: int
    evicted_full: int  # forgotten because max_clients was reached


class ClientBuckets:
    """``requests`` per ``per_seconds`` for each client address, in bursts of up to
    ``requests``: one :class:`actors.TokenBucketCore` per address, so an address gets its
    tokens back at exactly the times a bot's own limiter would."""

    def __init__(self, requests: int, per_seconds: float, *, max_clients: int = 10_000) -> None:
        if not (isinstance(requests, int) and requests >= 1):
            raise ValueError(f"requests must be a whole number >= 1, got {requests!r}")
        if not (math.isfinite(per_seconds) and per_seconds > 0):
            raise ValueError(f"per_seconds must be a finite number > 0, got {per_seconds!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.burst = requests
        self.per_seconds = per_seconds
        self.rate = requests / per_seconds
        self.max_clients = max_clients
        # Least recently seen first, so buckets full again are found at the front.
        self._buckets: OrderedDict[str, TokenBucketCore] = OrderedDict()
        self._allowed = 0
        self._limited = 0
        self._evicted_idle = 0
        self._evicted_full = 0

    def acquire(self, client: str) -> float:
        """Take one request of ``client``'s allowance: 0.0 if admitted, else the seconds until
        its next request would be."""
        now = trio.current_time()
        self._evict_idle(now)
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucketCore(self.rate, self.burst)
            self._buckets[client] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
                self._evicted_full += 1
        else:
            self._buckets.move_to_end(client)
        wait = bucket.try_take(now)
        if wait == 0.0:
            self._allowed += 1
        else:
            self._limited += 1
        return wait

    def _evict_idle(self, now: float) -> None:
        # A bucket full again is indistinguishable from a new one. The scan stops at the first
        # bucket still refilling: amortised O(1), and eviction is only ever late, never early.
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if oldest.full_at() > now:
                return
            buckets.popitem(last=False)
            self._evicted_idle += 1

    def statistics(self) -> RateLimitStatistics:
        return RateLimitStatistics(
            clients=len(self._buckets),
            max_clients=self.max_clients,
            allowed=self._allowed,
            limited=self._limited,
            evicted_idle=self._evicted_idle,
            evicted_full=self._evicted_full,
        )


def _networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: Scope, trusted_proxies: tuple[Network, ...] = ()) -> str:
    """The address a request comes from.

    ``X-Forwarded-For`` is believed only when the peer is a trusted proxy, and then read from
    the right: each trusted proxy appended the address it saw, so the first untrusted entry
    from the right is the client (entries further left are whatever the client claimed).
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded.extend(part.strip() for part in value.decode("latin-1").split(","))
    address = peer
    for entry in reversed([f for f in forwarded if f]):
        address = entry[:_MAX_KEY]
        if not _trusted(address, trusted_proxies):
            break
    return address


class IpRateLimit:
    """ASGI middleware: 429 with ``Retry-After`` for a client address past its allowance.

    It sits outside authentication, so guessing the admin token is rate limited too.
    """

    def __init__(
        self, app: ASGIApp, *, buckets: ClientBuckets, trusted_proxies: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.buckets = buckets
        self._trusted = _networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            wait = self.buckets.acquire(client_address(scope, self._trusted))
            if wait > 0:
                # Rounded first so float noise (20.000000001) does not add a second.
                retry_after = max(1, math.ceil(round(wait, 6)))
                await refuse(
                    scope,
                    send,
                    429,
                    f"too many requests from your address: the limit is "
                    f"{self.buckets.burst} per {self.buckets.per_seconds:g} s; "
                    f"try again in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )
                return
        await self.app(scope, receive, send)
