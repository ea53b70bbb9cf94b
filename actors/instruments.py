"""FleetInstruments: the daemon's own Prometheus counters and histograms, fleet-wide.

What ``/metrics`` cannot read from the bots' ``statistics()`` because no bot keeps it: updates
received by type, Bot API call attempts by method and outcome, messages sent, and the
latency histograms of Bot API calls (by method) and of replies. One object per daemon,
shared by every bot (``FleetServices.instruments``; the metrics actor holds the same one for
the scrape). An observation is a dict lookup and a list increment on the event loop (no lock:
Trio runs one task at a time); the scrape turns the lists into cumulative buckets
(:meth:`FleetInstruments.statistics`). Unlike the per-bot sums, these never go down while the
daemon runs (removing a bot keeps what it did), as Prometheus counters must.

Label sets are bounded by construction: update types from ``UPDATE_TYPES`` plus ``other``,
methods from :data:`~actors.botapi.methods.BOT_API_METHODS` plus ``other``, outcomes from
:data:`storage.OUTCOMES` (the usage analytics' names).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from actors.botapi.methods import BOT_API_METHODS, OTHER_METHOD
from actors.config import UPDATE_TYPES
from storage import LATENCY_BOUNDS_MS, OUTCOMES

__all__ = [
    "CALL_LATENCY_BOUNDS",
    "INSTRUMENT_METHODS",
    "INSTRUMENT_UPDATE_TYPES",
    "REPLY_LATENCY_BOUNDS",
    "FleetInstruments",
    "Histogram",
    "InstrumentStatistics",
]

# Upper bounds (seconds) of the Bot API call latency buckets, for Telegram's latencies: a
# call from a host near Telegram's data centres answers in 10-50 ms, from elsewhere in
# 50-250 ms; uploads and a loaded Bot API take 0.5-5 s; then come the timeouts
# (telegram.request_timeout, 30 s by default; 60 s catches a raised one). getUpdates long
# polls are not observed (their duration is the poll timeout, not Telegram's speed).
CALL_LATENCY_BOUNDS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Reply latency (update stored -> its first reply sent): the usage analytics' buckets
# (storage.LATENCY_BOUNDS_MS, 50 ms to 5 min), in seconds, so PromQL's quantiles and
# /admin/analytics/usage's p50/p95 come from the same bucket edges.
REPLY_LATENCY_BOUNDS: tuple[float, ...] = tuple(
    bound / 1000.0 for bound in LATENCY_BOUNDS_MS if bound != float("inf")
)
INSTRUMENT_UPDATE_TYPES: tuple[str, ...] = (*UPDATE_TYPES, "other")
INSTRUMENT_METHODS: tuple[str, ...] = (*BOT_API_METHODS, OTHER_METHOD)

_UPDATE_INDEX = {name: i for i, name in enumerate(INSTRUMENT_UPDATE_TYPES)}
_OTHER_UPDATE = _UPDATE_INDEX["other"]
_METHOD_INDEX = {name: i for i, name in enumerate(INSTRUMENT_METHODS)}
_OTHER_METHOD = _METHOD_INDEX[OTHER_METHOD]
_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
_OUTCOMES = len(OUTCOMES)
_CALL_SLOTS = len(CALL_LATENCY_BOUNDS) + 1  # the last one: above every bound (+Inf)


@dataclass(frozen=True)
class Histogram:
    """One histogram as Prometheus exposes it: cumulative counts per bound, then +Inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # len(bounds) + 1; the last is the count
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


@dataclass(frozen=True)
class InstrumentStatistics:
    """What :class:`FleetInstruments` counted since the daemon started."""

    updates: dict[str, int]  # every type of INSTRUMENT_UPDATE_TYPES, zeros included
    calls: dict[tuple[str, str], int]  # (method, outcome) -> attempts; only those seen
    messages_sent: int
    call_latency: dict[str, Histogram]  # by method; only methods with an observation
    reply_latency: Histogram


def _histogram(bounds: tuple[float, ...], slots: list[int], total: float) -> Histogram:
    return Histogram(bounds, tuple(accumulate(slots)), total)


class FleetInstruments:
    """The fleet's counters and histograms (see the module docstring)."""

    __slots__ = (
        "_call_slots",
        "_call_sums",
        "_calls",
        "_reply_slots",
        "_reply_sum",
        "_sent",
        "_updates",
    )

    def __init__(self) -> None:
        self._updates = [0] * len(INSTRUMENT_UPDATE_TYPES)
        # Flat, row-major: [method][outcome] and [method][latency slot].
        self._calls = [0] * (len(INSTRUMENT_METHODS) * _OUTCOMES)
        self._call_slots = [0] * (len(INSTRUMENT_METHODS) * _CALL_SLOTS)
        self._call_sums = [0.0] * len(INSTRUMENT_METHODS)
        self._sent = 0
        self._reply_slots = [0] * (len(REPLY_LATENCY_BOUNDS) + 1)
        self._reply_sum = 0.0

    # --- the hot path ----------------------------------------------------------------------

    def count_update(self, kind: str) -> None:
        """One update first stored in the inbox, of type ``kind`` (unknown: ``other``)."""
        self._updates[_UPDATE_INDEX.get(kind, _OTHER_UPDATE)] += 1

    def count_call(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """One Bot API attempt of ``method`` with ``outcome`` (one of ``OUTCOMES``), and its
        latency if measured; a successful ``send*`` is a message sent."""
        m = _METHOD_INDEX.get(method, _OTHER_METHOD)
        self._calls[m * _OUTCOMES + _OUTCOME_INDEX[outcome]] += 1
        if seconds is not None:
            self._call_slots[m * _CALL_SLOTS + bisect_left(CALL_LATENCY_BOUNDS, seconds)] += 1
            self._call_sums[m] += seconds
        if outcome == "ok" and method[:4] == "send":
            self._sent += 1

    def observe_reply_latency(self, seconds: float) -> None:
        """An update's first reply was sent ``seconds`` after the update was stored."""
        self._reply_slots[bisect_left(REPLY_LATENCY_BOUNDS, seconds)] += 1
        self._reply_sum += seconds

    # --- the scrape ------------------------------------------------------------------------

    def statistics(self) -> InstrumentStatistics:
        """Everything counted so far, the histograms cumulative (a few thousand list reads:
        done per scrape, never per observation)."""
        calls: dict[tuple[str, str], int] = {}
        latency: dict[str, Histogram] = {}
        for m, method in enumerate(INSTRUMENT_METHODS):
            row = self._calls[m * _OUTCOMES : (m + 1) * _OUTCOMES]
            for outcome, count in zip(OUTCOMES, row, strict=True):
                if count:
                    calls[(method, outcome)] = count
            slots = self._call_slots[m * _CALL_SLOTS : (m + 1) * _CALL_SLOTS]
            if any(slots):
                latency[method] = _histogram(CALL_LATENCY_BOUNDS, slots, self._call_sums[m])
        return InstrumentStatistics(
            updates=dict(zip(INSTRUMENT_UPDATE_TYPES, self._updates, strict=True)),
            calls=calls,
            messages_sent=self._sent,
            call_latency=latency,
            reply_latency=_histogram(REPLY_LATENCY_BOUNDS, self._reply_slots, self._reply_sum),
        )
