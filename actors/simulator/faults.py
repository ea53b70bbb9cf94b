"""What can go wrong in the simulated Bot API: fault profiles, outages and flood limits.

A :class:`FaultProfile` gives, per call, the probability of each fault. One random draw per call
picks at most one fault, in this order: connect error, 5xx, timeout, drop, 409, 429 (so the rates
must add up to at most 1). Faults that have no HTTP answer (connect error, timeout, drop, and an
outage's gateway page) are raised by ``SimulatedBotApi.handle`` as :class:`SimulatedFault`; each
transport turns them into what a client of a real server would see.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["FaultKind", "FaultProfile", "FloodLimits", "OutageMode", "SimulatedFault"]


# The fault profile's own rule wording (the config models state theirs through pydantic).
def check(condition: bool, key: str, rule: str, value: object) -> None:
    """Raise ``ValueError("<key> must <rule>, got <value>")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{key} must {rule}, got {value!r}")


class FaultKind(enum.Enum):
    """A failure without a Bot API answer."""

    CONNECT_ERROR = "connect_error"  # refused before the request was sent: nothing happened
    BAD_GATEWAY = "bad_gateway"  # a gateway's HTML 502 page: the request did not reach the API
    TIMEOUT = "timeout"  # the server holds the request past any client timeout
    DROP = "drop"  # the connection closes after the request arrived, without an answer


class OutageMode(enum.Enum):
    """How every call fails during :meth:`SimulatedBotApi.outage`."""

    CONNECT_ERROR = "connect_error"
    BAD_GATEWAY = "bad_gateway"
    MIXED = "mixed"  # each call one or the other, half and half


class SimulatedFault(Exception):
    """Raised by ``SimulatedBotApi.handle`` for a fault that has no Bot API answer.

    ``delivered`` is True when the call took effect before the fault (a sendMessage whose
    message reached the chat, though its client will never hear so).
    """

    def __init__(self, kind: FaultKind, *, delivered: bool = False) -> None:
        super().__init__(f"simulated {kind.value}")
        self.kind = kind
        self.delivered = delivered


def _rate(key: str, value: float) -> None:
    check(
        isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1,
        f"FaultProfile.{key}",
        "be a probability from 0 to 1",
        value,
    )


@dataclass(frozen=True)
class FaultProfile:
    """Per-call fault probabilities and fixed behaviours of the simulated Bot API.

    For sendMessage, a 5xx, 409 or 429 means the message was not delivered; a timeout or a drop
    delivered it first with probability ``deliver_before_fault_rate``, which is what makes a
    client's "uncertain send" logic matter. For getUpdates, a timeout or drop happens after the
    offset confirmed the updates below it; the updates it would have returned stay pending.
    A 409 is only injected into getUpdates (it means another poller); other methods ignore it.
    """

    error_rate_5xx: float = 0.0
    timeout_rate: float = 0.0
    drop_rate: float = 0.0
    conflict_409_rate: float = 0.0
    rate_limit_rate: float = 0.0
    connect_error_rate: float = 0.0
    # The retry_after of an injected 429, in whole seconds as Telegram sends it.
    retry_after: int = 5
    # Seconds added to every call, half before the server acts and half after (so a client
    # that times out during the second half missed an answer to a call that took effect).
    latency: float = 0.0
    # Up to this many seconds more, uniformly drawn per call.
    latency_jitter: float = 0.0
    deliver_before_fault_rate: float = 0.5

    def __post_init__(self) -> None:
        for key in (
            "error_rate_5xx",
            "timeout_rate",
            "drop_rate",
            "conflict_409_rate",
            "rate_limit_rate",
            "connect_error_rate",
            "deliver_before_fault_rate",
        ):
            _rate(key, getattr(self, key))
        check(
            self.fault_rate <= 1 + 1e-9,
            "FaultProfile's fault rates",
            "add up to at most 1",
            round(self.fault_rate, 6),
        )
        check(
            isinstance(self.retry_after, int) and self.retry_after >= 1,
            "FaultProfile.retry_after",
            "be a whole number of seconds >= 1",
            self.retry_after,
        )
        for key in ("latency", "latency_jitter"):
            value = getattr(self, key)
            check(
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                f"FaultProfile.{key}",
                "be >= 0 seconds",
                value,
            )

    @property
    def fault_rate(self) -> float:
        """The probability that a call gets some fault."""
        return (
            self.connect_error_rate
            + self.error_rate_5xx
            + self.timeout_rate
            + self.drop_rate
            + self.conflict_409_rate
            + self.rate_limit_rate
        )


@dataclass(frozen=True)
class FloodLimits:
    """Telegram-like flood limits on sendMessage, as token buckets; a call over one -> 429.

    Telegram asks for at most one message a second to a private chat, 20 a minute to a group
    and about 30 a second per bot. ``retry_after`` is the whole seconds until a token is back.
    """

    private_per_second: float = 1.0
    private_burst: int = 1
    group_per_minute: float = 20.0
    group_burst: int = 20
    bot_per_second: float = 30.0
    bot_burst: int = 30

    def __post_init__(self) -> None:
        for key in ("private_per_second", "group_per_minute", "bot_per_second"):
            value = getattr(self, key)
            check(
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
                f"FloodLimits.{key}",
                "be > 0",
                value,
            )
        for key in ("private_burst", "group_burst", "bot_burst"):
            value = getattr(self, key)
            check(
                isinstance(value, int) and value >= 1,
                f"FloodLimits.{key}",
                "be a whole number >= 1",
                value,
            )
