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
from storage import LATENCY_BOUNDS_S, OUTCOMES

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
# (storage.LATENCY_BOUNDS_S, 50 ms to 5 min), so PromQL's quantiles and
# /admin/analytics/usage's p50/p95 come from the same bucket edges, and a slot index is
# storage.latency_index's.
REPLY_LATENCY_BOUNDS: tuple[float, ...] = LATENCY_BOUNDS_S[:-1]
INSTRUMENT_UPDATE_TYPES: tuple[str, ...] = (*UPDATE_TYPES, "other")
INSTRUMENT_METHODS: tuple[str, ...] = (*BOT_API_METHODS, OTHER_METHOD)

_UPDATE_INDEX = {name: i for i, name in enumerate(INSTRUMENT_UPDATE_TYPES)}
_OTHER_UPDATE = _UPDATE_INDEX["other"]
_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
_OK = _OUTCOME_INDEX["ok"]
# A method's row: its attempts by outcome, then its latency slots (the last one above every
# bound: +Inf), then the latency sum.
_FIRST_SLOT = len(OUTCOMES)
_SUM = _FIRST_SLOT + len(CALL_LATENCY_BOUNDS) + 1
_SENDS = tuple(method for method in BOT_API_METHODS if method.startswith("send"))


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

    __slots__ = ("_other", "_reply_slots", "_reply_sum", "_rows", "_updates")

    def __init__(self) -> None:
        self._updates = [0] * len(INSTRUMENT_UPDATE_TYPES)
        self._rows: dict[str, list[float]] = {
            method: [0] * _SUM + [0.0] for method in INSTRUMENT_METHODS
        }
        self._other = self._rows[OTHER_METHOD]
        self._reply_slots = [0] * (len(REPLY_LATENCY_BOUNDS) + 1)
        self._reply_sum = 0.0

    # --- the hot path ----------------------------------------------------------------------

    def count_update(self, kind: str) -> None:
        """One update first stored in the inbox, of type ``kind`` (unknown: ``other``)."""
        self._updates[_UPDATE_INDEX.get(kind, _OTHER_UPDATE)] += 1

    def count_call(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """One Bot API attempt of ``method`` (not a Bot API method: ``other``) with
        ``outcome`` (one of ``OUTCOMES``), and its latency if measured."""
        row = self._rows.get(method, self._other)
        row[_OUTCOME_INDEX[outcome]] += 1
        if seconds is not None:
            row[_FIRST_SLOT + bisect_left(CALL_LATENCY_BOUNDS, seconds)] += 1
            row[_SUM] += seconds

    def observe_reply_latency(self, seconds: float, slot: int | None = None) -> None:
        """An update's first reply was sent ``seconds`` after the update was stored; ``slot``,
        its bucket if already known (``storage.latency_index(seconds)``)."""
        if slot is None:
            slot = bisect_left(REPLY_LATENCY_BOUNDS, seconds)
        self._reply_slots[slot] += 1
        self._reply_sum += seconds

    # --- the scrape ------------------------------------------------------------------------

    def statistics(self) -> InstrumentStatistics:
        """Everything counted so far, the histograms cumulative (a few thousand list reads:
        done per scrape, never per observation). Messages sent are the ``ok`` attempts of
        the Bot API's ``send*`` methods."""
        calls: dict[tuple[str, str], int] = {}
        latency: dict[str, Histogram] = {}
        for method, row in self._rows.items():
            for outcome, count in zip(OUTCOMES, row[:_FIRST_SLOT], strict=True):
                if count:
                    calls[(method, outcome)] = int(count)
            slots = [int(n) for n in row[_FIRST_SLOT:_SUM]]
            if any(slots):
                latency[method] = _histogram(CALL_LATENCY_BOUNDS, slots, row[_SUM])
        return InstrumentStatistics(
            updates=dict(zip(INSTRUMENT_UPDATE_TYPES, self._updates, strict=True)),
            calls=calls,
            messages_sent=sum(int(self._rows[method][_OK]) for method in _SENDS),
            call_latency=latency,
            reply_latency=_histogram(REPLY_LATENCY_BOUNDS, self._reply_slots, self._reply_sum),
        )
