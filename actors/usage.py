"""UsageMeter: one bot's usage counts since they were last written, kept on the event loop.

Counting is a dict increment (well under a microsecond; ``bench usage`` measures it); the
counts reach SQLite through the store's one writer, taken with :meth:`UsageMeter.take`: with
an update's done mark (the same transaction, so the sends of a handled update and its mark
commit together) and every ``supervisor.report_interval`` for what no update carries
(getUpdates polls, webhook deliveries). Metric names are :mod:`storage.usage`'s.

Calls and reply latencies also go to the daemon's :class:`~actors.instruments.FleetInstruments`
(the Prometheus counters and histograms) when the meter is given them: one place counts both.
"""

from __future__ import annotations

from actors.botapi.methods import method_label
from actors.instruments import FleetInstruments
from storage import LATENCY_METRICS, latency_index

__all__ = ["UsageMeter", "call_outcome"]


def call_outcome(category: str | None) -> str:
    """The ``calls.<method>.<outcome>`` outcome of an attempt: ``ok`` (``None``),
    ``throttled`` (rate_limit) or ``failed_<category>``."""
    if category is None:
        return "ok"
    if category == "rate_limit":
        return "throttled"
    return "failed_" + category


class UsageMeter:
    """Counts not yet written, metric name -> count."""

    __slots__ = ("_counts", "_fleet")

    def __init__(self, fleet: FleetInstruments | None = None) -> None:
        self._counts: dict[str, int] = {}
        self._fleet = fleet

    def count(self, metric: str, n: int = 1) -> None:
        """Add ``n`` to ``metric``."""
        counts = self._counts
        counts[metric] = counts.get(metric, 0) + n

    def count_call(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """One Bot API attempt of ``method`` (not a Bot API method: ``other``) with
        ``outcome`` (see :func:`call_outcome`, or ``retried`` for a retry scheduled); a
        successful ``send*`` is a message sent. ``seconds``, the attempt's latency where
        measured, goes to the fleet's histogram."""
        fleet = self._fleet
        if fleet is not None:
            fleet.count_call(method, outcome, seconds)
        counts = self._counts
        # By Bot API method name, any other name as ``other``: a handler calling names of its
        # own making must not grow the usage table by a row per name.
        metric = f"calls.{method_label(method)}.{outcome}"
        counts[metric] = counts.get(metric, 0) + 1
        if outcome == "ok" and method[:4] == "send":
            counts["sends"] = counts.get("sends", 0) + 1

    def count_reply_latency(self, seconds: float) -> None:
        """An update's first reply, ``seconds`` after the update was stored."""
        slot = latency_index(seconds)
        if self._fleet is not None:
            self._fleet.observe_reply_latency(seconds, slot)
        counts = self._counts
        metric = LATENCY_METRICS[slot]
        counts[metric] = counts.get(metric, 0) + 1

    def count_webhook(self, accepted: bool) -> None:
        """One webhook delivery to this bot, accepted or rejected (bad secret, bad body...).
        The webhook receiver calls it; the count is written with the next periodic flush."""
        self.count("webhook.accepted" if accepted else "webhook.rejected")

    def take(self) -> dict[str, int]:
        """The counts so far, and start again from zero."""
        counts = self._counts
        self._counts = {}
        return counts

    def give_back(self, counts: dict[str, int]) -> None:
        """Counts that could not be written (a full write queue): keep them for next time."""
        for metric, n in counts.items():
            self.count(metric, n)

    def pending(self) -> dict[str, int]:
        """A copy of the counts not yet written (tests, statistics)."""
        return dict(self._counts)
