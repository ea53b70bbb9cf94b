"""``GET /metrics``: the fleet in the Prometheus text format, via prometheus-client.

Each app gets its own ``CollectorRegistry`` (never the global one, so two daemons can share a
process) with one collector that reads ``statistics()`` records at scrape time: nothing is
counted twice and nothing is kept between scrapes.

Cardinality: 9 series per bot (label ``user_id``) unless ``admin.metrics_per_bot = false``,
plus about 50 fleet and daemon series, 24 of updates by type, and, for each Bot API method
the fleet calls, up to 7 of calls by outcome and 15 of its latency histogram (methods from a
fixed list, the rest ``other``); docs/OPERATIONS.md has the arithmetic for large fleets.

Run as a shard (``botvisor run --shard i/N``), every series carries ``shard="i"``, so the
shards' scrapes sum and compare without relabelling; without a shard there is no such label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.requests import Request
from starlette.responses import Response

from actors import (
    COMMIT_BUCKETS,
    BotStatistics,
    BotStatus,
    BreakerState,
    FleetTotals,
    Histogram,
    InstrumentStatistics,
    Shard,
)
from admin.context import AdminContext
from admin.dead_letters import DeadLetterActions
from admin.events import EventStreams
from admin.operations import Reply, operation
from admin.ratelimit import ClientBuckets

__all__ = [
    "BREAKER_STATE_VALUES",
    "STATUS_VALUES",
    "FleetCollector",
    "metrics_endpoint",
    "metrics_registry",
]

# Numeric codes keep one series per bot; higher is worse, so alerts read `> 0`.
STATUS_VALUES = {
    BotStatus.HEALTHY: 0,
    BotStatus.DEGRADED: 1,
    BotStatus.UNHEALTHY: 2,
    BotStatus.SUSPENDED: 3,
}
BREAKER_STATE_VALUES = {
    BreakerState.CLOSED: 0,
    BreakerState.DISABLED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
    BreakerState.FORCED_OPEN: 2,
}

# Above this many samples the text is formatted in a worker thread.
OFFLOAD_SAMPLES = 20_000

_STATUS_HELP = "0 healthy, 1 degraded, 2 unhealthy, 3 suspended"
_BREAKER_HELP = "0 closed (or disabled), 1 half_open, 2 open (or forced_open)"


def _labelled(families: list[Metric], shard: Shard | None) -> list[Metric]:
    """``families`` with ``shard="i"`` on every sample (unchanged without a shard)."""
    if shard is None:
        return families
    value = str(shard.index)
    for family in families:
        family.samples = [
            sample._replace(labels={**sample.labels, "shard": value}) for sample in family.samples
        ]
    return families


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class FleetCollector:
    """A prometheus-client collector over the daemon's ``statistics()`` records."""

    def __init__(
        self,
        context: AdminContext,
        *,
        rate_limiter: ClientBuckets | None = None,
        streams: EventStreams | None = None,
        dead_letter_actions: DeadLetterActions | None = None,
    ) -> None:
        self._ctx = context
        self._rate_limiter = rate_limiter
        self._streams = streams
        self._dead_letter_actions = dead_letter_actions

    def collect(self) -> Iterable[Metric]:
        """The prometheus-client collector protocol (reads everything in one go)."""
        health = self._ctx.metrics.health
        if not self._ctx.metrics_per_bot:
            return _labelled(list(self._families(health.totals(), None)), self._ctx.shard)
        pull = health.full_pull()
        families = list(self._families(health.totals(pull), self._with_restarts(pull.bots or ())))
        return _labelled(families, self._ctx.shard)

    async def collect_async(self) -> list[Metric]:
        """The same for the endpoint. With per-bot series the fleet's health is pulled in
        chunks (yielding to the event loop between them) so a scrape of a large fleet does
        not stall the bots; without them the fleet's totals are read in one go, cheaply
        (:meth:`actors.FleetHealth.totals`)."""
        health = self._ctx.metrics.health
        if not self._ctx.metrics_per_bot:
            return _labelled(list(self._families(health.totals(), None)), self._ctx.shard)
        pull = await health.full_pull_async()
        families = list(self._families(health.totals(pull), self._with_restarts(pull.bots or ())))
        return _labelled(families, self._ctx.shard)

    def _with_restarts(self, bots: Iterable[BotStatistics]) -> list[tuple[BotStatistics, int]]:
        supervisor = self._ctx.supervisor
        rows = []
        for stats in bots:
            child = supervisor.child_statistics(stats.user_id)
            rows.append((stats, child.restarts if child is not None else 0))
        return rows

    def _families(
        self, totals: FleetTotals, rows: list[tuple[BotStatistics, int]] | None
    ) -> Iterator[Metric]:
        """Per-bot families from ``rows`` (None: per-bot series off), then the fleet's and
        the daemon's."""
        ctx = self._ctx
        if rows is not None:
            yield from _per_bot_families(rows)
        yield from self._fleet(totals)
        yield from _instrument_families(ctx.metrics.instruments.statistics())
        yield from self._daemon()
        yield from self._webhook()

    def _webhook(self) -> Iterator[Metric]:
        receiver = self._ctx.webhook
        if receiver is None:
            return
        stats = receiver.statistics()
        accepted = CounterMetricFamily(
            "botvisor_webhook_deliveries_accepted",
            "Webhook deliveries answered 200: new (committed and handed on) or duplicate "
            "(already in the inbox)",
            labels=["outcome"],
        )
        accepted.add_metric(["new"], stats.accepted_new)
        accepted.add_metric(["duplicate"], stats.accepted_duplicate)
        yield accepted
        rejected = CounterMetricFamily(
            "botvisor_webhook_deliveries_rejected",
            "Webhook deliveries refused, by reason (docs/OPERATIONS.md: the answer of each)",
            labels=["reason"],
        )
        for reason, count in stats.rejected.items():
            rejected.add_metric([reason], count)
        yield rejected
        yield _gauge(
            "botvisor_webhook_in_flight", "Deliveries waiting for their commit", stats.in_flight
        )
        bounds = [f"{bound:g}" for bound in COMMIT_BUCKETS] + ["+Inf"]
        yield HistogramMetricFamily(
            "botvisor_webhook_commit_seconds",
            "From a delivery's update parsed to its inbox commit (the wait before its 200)",
            buckets=list(zip(bounds, stats.commit_buckets, strict=True)),
            sum_value=stats.commit_seconds_sum,
        )

    def _fleet(self, totals: FleetTotals) -> Iterator[Metric]:
        bots = GaugeMetricFamily("botvisor_bots", "Registered bots by status", labels=["status"])
        for name, count in totals.by_status.items():
            bots.add_metric([name], count)
        yield bots
        breakers = GaugeMetricFamily(
            "botvisor_breakers", "Circuit breakers by state", labels=["state"]
        )
        for name, count in totals.by_breaker.items():
            breakers.add_metric([name], count)
        yield breakers
        fleet = "summed over the fleet's bots (removed ones included)"
        now = "summed over the bots registered now"
        yield _counter("botvisor_requests", f"Bot API calls, {fleet}", totals.requests)
        yield _counter("botvisor_failures", f"Failed Bot API calls, {fleet}", totals.failures)
        yield _counter("botvisor_throttled", f"429-throttled calls, {fleet}", totals.throttled)
        yield _counter(
            "botvisor_chat_errors", f"Calls refused for one chat, {fleet}", totals.chat_errors
        )
        yield _counter("botvisor_retries", f"Retried attempts, {fleet}", totals.retries)
        yield _counter(
            "botvisor_handled_updates", f"Updates handled, {fleet}", totals.handled_updates
        )
        yield _counter("botvisor_replies_sent", f"Replies delivered, {fleet}", totals.replies_sent)
        yield _counter(
            "botvisor_dead_letters",
            f"Updates given up after their delivery deadline, {fleet}",
            totals.dead_letters,
        )
        yield _counter(
            "botvisor_ambiguous_sends",
            f"Sends of unknown outcome counted as sent, {fleet}",
            totals.ambiguous_sends,
        )
        yield _counter(
            "botvisor_handler_errors", f"Handler exceptions, {fleet}", totals.handler_errors
        )
        yield _gauge(
            "botvisor_lane_updates",
            f"Updates held in memory by chat lanes (at most 64 a lane), {now}",
            totals.lane_updates,
        )
        yield _gauge(
            "botvisor_lanes_overflowing",
            f"Chat lanes behind, whose further updates wait in the inbox, {now}",
            totals.lanes_overflowing,
        )

    def _daemon(self) -> Iterator[Metric]:
        ctx = self._ctx
        supervisor = ctx.supervisor.statistics()
        children = GaugeMetricFamily(
            "botvisor_supervised_bots", "Bots under supervision by state", labels=["state"]
        )
        children.add_metric(["running"], supervisor.running)
        children.add_metric(["restarting"], supervisor.restarting)
        children.add_metric(["suspended"], supervisor.suspended)
        yield children
        yield _counter(
            "botvisor_supervisor_restarts",
            "Bot restarts by the supervisor since start",
            supervisor.total_restarts,
        )
        yield _counter(
            "botvisor_supervisor_crashes", "Bot crashes seen since start", supervisor.total_crashes
        )
        sink = ctx.events.statistics()
        yield _counter(
            "botvisor_events_sent", "Events from bots queued to the metrics actor", sink.sent
        )
        yield _counter(
            "botvisor_events_dropped",
            "Events dropped because the metrics actor's queue was full",
            sink.dropped,
        )
        yield _gauge("botvisor_event_queue_used", "Events waiting in the queue", sink.buffer_used)
        yield _gauge("botvisor_event_queue_size", "The queue's capacity", sink.buffer_size)
        metrics = ctx.metrics.statistics()
        yield _counter(
            "botvisor_metrics_events_received",
            "Events taken in by the metrics actor",
            metrics.events_received,
        )
        yield _counter(
            "botvisor_snapshots_written", "Health snapshots written", metrics.snapshots_written
        )
        yield _counter(
            "botvisor_snapshot_rows_written",
            "bot_health_metrics rows written",
            metrics.snapshot_rows_written,
        )
        yield _counter(
            "botvisor_retention_rows_deleted",
            "Rows deleted by retention",
            metrics.retention_rows_deleted,
        )
        if metrics.last_snapshot_at is not None:
            yield _gauge(
                "botvisor_last_snapshot_timestamp_seconds",
                "Wall-clock time of the last snapshot",
                metrics.last_snapshot_at,
            )
        yield _gauge("botvisor_live_subscribers", "Live event subscribers now", metrics.subscribers)
        yield _counter(
            "botvisor_live_subscribers_dropped",
            "Live event subscribers dropped for falling behind",
            metrics.subscribers_dropped,
        )
        if self._streams is not None:
            streams = self._streams.statistics()
            yield _gauge(
                "botvisor_admin_event_streams", "Open /admin/events WebSockets", streams.open
            )
        if self._dead_letter_actions is not None:
            acted = self._dead_letter_actions.statistics()
            actions = CounterMetricFamily(
                "botvisor_dead_letter_actions",
                "Operators' redrive and discard requests on dead letters since start",
                labels=["action"],
            )
            actions.add_metric(["redrive"], acted.redrives)
            actions.add_metric(["discard"], acted.discards)
            yield actions
            letters = CounterMetricFamily(
                "botvisor_dead_letters_acted_on",
                "Dead letters redriven, refused a redrive, or discarded, since start",
                labels=["outcome"],
            )
            letters.add_metric(["redriven"], acted.redriven)
            letters.add_metric(["refused"], acted.refused)
            letters.add_metric(["discarded"], acted.discarded)
            yield letters
        limiter = self._rate_limiter
        if limiter is not None:
            limits = limiter.statistics()
            yield _counter(
                "botvisor_admin_rate_limited",
                "Admin requests refused by the IP rate limit",
                limits.limited,
            )
            yield _gauge(
                "botvisor_admin_rate_limit_clients",
                "Client addresses tracked by the IP rate limit",
                limits.clients,
            )


def _per_bot_families(rows: list[tuple[BotStatistics, int]]) -> Iterator[Metric]:
    """The 9 series of each bot (label ``user_id``)."""
    status = GaugeMetricFamily("botvisor_bot_status", _STATUS_HELP, labels=["user_id"])
    breaker = GaugeMetricFamily("botvisor_bot_breaker_state", _BREAKER_HELP, labels=["user_id"])
    requests = CounterMetricFamily(
        "botvisor_bot_requests",
        "Bot API calls of the bot with an outcome (successes, failures, throttled, chat errors)",
        labels=["user_id"],
    )
    failures = CounterMetricFamily(
        "botvisor_bot_failures", "Bot API calls of the bot that failed", labels=["user_id"]
    )
    throttled = CounterMetricFamily(
        "botvisor_bot_throttled", "Calls answered 429 (flood control)", labels=["user_id"]
    )
    retries = CounterMetricFamily(
        "botvisor_bot_retries", "Attempts after the first one", labels=["user_id"]
    )
    latency = GaugeMetricFamily(
        "botvisor_bot_response_time_seconds",
        "Moving average (EMA) of the bot's Bot API response time; absent until measured",
        labels=["user_id"],
    )
    error_rate = GaugeMetricFamily(
        "botvisor_bot_error_rate",
        "Failed share of the bot's calls in the health window",
        labels=["user_id"],
    )
    restarts = CounterMetricFamily(
        "botvisor_bot_restarts", "Restarts of the bot by its supervisor", labels=["user_id"]
    )
    for stats, restart_count in rows:
        health = stats.health
        label = [str(stats.user_id)]
        status.add_metric(label, STATUS_VALUES[stats.status])
        breaker.add_metric(label, BREAKER_STATE_VALUES[stats.breaker.state])
        requests.add_metric(label, health.total_requests)
        failures.add_metric(label, health.failed_requests)
        throttled.add_metric(label, health.throttled)
        retries.add_metric(label, stats.retry.retries)
        if health.ema_latency_ms is not None:
            latency.add_metric(label, health.ema_latency_ms / 1000.0)
        error_rate.add_metric(label, health.error_rate)
        restarts.add_metric(label, restart_count)
    yield from (status, breaker, requests, failures, throttled, retries, latency, error_rate)
    yield restarts


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    bounds = [f"{bound:g}" for bound in histogram.bounds] + ["+Inf"]
    return list(zip(bounds, histogram.cumulative, strict=True))


def _instrument_families(stats: InstrumentStatistics) -> Iterator[Metric]:
    """The fleet's own counters and histograms (actors.FleetInstruments): fleet-wide only,
    whatever ``metrics_per_bot`` says; labels from fixed sets (docs/OPERATIONS.md)."""
    updates = CounterMetricFamily(
        "botvisor_updates_received",
        "Updates first stored in the inbox, by update type ('other': a type botvisor does "
        "not know); a redelivered update is not counted again",
        labels=["type"],
    )
    for kind, count in stats.updates.items():
        updates.add_metric([kind], count)
    yield updates
    calls = CounterMetricFamily(
        "botvisor_api_calls",
        "Bot API call attempts by method ('other': not a Bot API method name) and outcome "
        "(ok, retried, throttled, failed_<category>)",
        labels=["method", "outcome"],
    )
    for (method, outcome), count in stats.calls.items():
        calls.add_metric([method, outcome], count)
    yield calls
    yield _counter("botvisor_messages_sent", "Successful send* Bot API calls", stats.messages_sent)
    latency = HistogramMetricFamily(
        "botvisor_api_call_duration_seconds",
        "Latency of Bot API call attempts by method (getUpdates long polls excluded)",
        labels=["method"],
    )
    for method, histogram in stats.call_latency.items():
        latency.add_metric([method], _buckets(histogram), histogram.sum)
    yield latency
    reply = stats.reply_latency
    yield HistogramMetricFamily(
        "botvisor_reply_latency_seconds",
        "From an update stored in the inbox to its first reply sent",
        buckets=_buckets(reply),
        sum_value=reply.sum,
    )


def metrics_registry(collector: FleetCollector) -> CollectorRegistry:
    """A fresh registry holding only this daemon's collector (never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _Collected:
    """Families already read, for formatting away from the event loop."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@operation(
    "Prometheus text format (needs the token unless admin.metrics_public = true)",
    {200: Reply("the metrics", media_type="text/plain", schema={"type": "string"})},
    tag="meta",
)
async def metrics_endpoint(request: Request) -> Response:
    collector: FleetCollector = request.app.state.metrics_collector
    families = await collector.collect_async()
    samples = sum(len(family.samples) for family in families)
    if samples > OFFLOAD_SAMPLES:
        # Formatting is most of a large scrape's cost (about 90 ms per 1,000 bots here): do
        # it in a worker thread, over families that no longer change.
        body = await trio.to_thread.run_sync(generate_latest, _Collected(families))
    else:
        body = generate_latest(_Collected(families))
    # The 0.0.4 text format: what every Prometheus version scrapes.
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
