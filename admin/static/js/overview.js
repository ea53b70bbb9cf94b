// The fleet at a glance: counts by status and breaker state, hourly usage, live per-minute
// rates sampled from the summary, the busiest tenants, recent incidents and live events.

import { call } from "./api.js";
import { chartCard, lastDay, lineChart } from "./charts.js";
import { badge, counts, h, number, when } from "./dom.js";
import { fleetSummary } from "./early.js";
import { openStream } from "./live.js";

const SAMPLE_MS = 10000;
const HOUR_S = 3600;

export async function overview(view, ctx) {
  const statusBox = h("div", { "data-testid": "fleet-status" }, "loading…");
  const breakerBox = h("div", { "data-testid": "fleet-breakers" }, "loading…");
  const totalsBox = h("p", { class: "note", "data-testid": "fleet-totals" });
  const hourly = chartCard(
    "Updates and replies per hour (last 24 h)",
    "chart-usage",
    "From /admin/analytics/usage: the API keeps usage in hourly buckets, so there is no per-minute series to draw here.",
  );
  const rate = chartCard(
    "Updates and replies per minute (live, since this page opened)",
    "chart-rate",
    "Sampled every 10 s from the fleet summary's counters; kept for one hour.",
  );
  const topBox = h("div", { "data-testid": "top-tenants" }, "loading…");
  const incidentsBox = h("div", { "data-testid": "incidents" }, "loading…");
  const events = h("ul", { class: "events", "data-testid": "events" });

  view.append(
    h("h1", {}, "Fleet"),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Bots by status"), statusBox, totalsBox),
      h("section", { class: "card" }, h("h2", {}, "Bots by breaker state"), breakerBox),
    ),
    h("div", { class: "grid" }, hourly.card, rate.card),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Busiest tenants (updates, last 24 h)"), topBox),
      h("section", { class: "card" }, h("h2", {}, "Recent incidents (unhealthy, last 24 h)"), incidentsBox),
    ),
    h("section", { class: "card" }, h("h2", {}, "Live events"), events),
  );

  const samples = [];
  const drawRate = () => {
    const xs = [];
    const updates = [];
    const replies = [];
    for (let i = 1; i < samples.length; i++) {
      const [t0, u0, r0] = samples[i - 1];
      const [t1, u1, r1] = samples[i];
      const minutes = (t1 - t0) / 60;
      if (minutes <= 0) continue;
      xs.push(t1);
      updates.push(Math.max(0, u1 - u0) / minutes);
      replies.push(Math.max(0, r1 - r0) / minutes);
    }
    lineChart(rate.box, xs, [
      { label: "updates/min", values: updates },
      { label: "replies/min", values: replies },
    ], { yLabel: "per minute", empty: "collecting: the first rate appears after two samples (10 s)" });
  };

  // One answer holds both counts (by status and by breaker state), read from the bots in
  // one go: they agree with each other, and the page waits for one request, not two.
  const drawSummary = (health) => {
    statusBox.replaceChildren(counts([["total", health.total_bots], ...Object.entries(health.by_status)], "status-counts"));
    breakerBox.replaceChildren(counts([["total", health.total_bots], ...Object.entries(health.by_breaker)], "breaker-counts"));
    totalsBox.textContent =
      `handled updates ${number(health.handled_updates)} · replies ${number(health.replies_sent)} · ` +
      `dead letters ${number(health.dead_letters)} · error rate ${number(health.error_rate * 100, 2)} % · ` +
      `avg response ${number(health.avg_response_time_ms, 1)} ms`;
    samples.push([health.generated_at, health.handled_updates, health.replies_sent]);
    while (samples.length && samples[0][0] < health.generated_at - HOUR_S) samples.shift();
  };
  const refreshSummary = async () => {
    drawSummary(await fleetSummary());
    drawRate();
  };

  const loadUsage = async () => {
    const usage = await call("/admin/analytics/usage", { params: { bucket: "hour" } });
    const xs = usage.rows.map((r) => Date.parse(r.start) / 1000);
    lineChart(hourly.box, xs, [
      { label: "updates", values: usage.rows.map((r) => r.updates) },
      { label: "replies (sends)", values: usage.rows.map((r) => r.sends) },
    ], { yLabel: "per hour", xRange: lastDay() });
  };

  const loadTop = async () => {
    const top = await call("/admin/analytics/top", { params: { metric: "updates", hours: 24, limit: 10 } });
    topBox.replaceChildren(
      top.tenants.length
        ? h("table", {},
            h("thead", {}, h("tr", {}, h("th", {}, "bot"), h("th", { class: "num" }, "updates"))),
            h("tbody", {}, top.tenants.map((t) =>
              h("tr", {}, h("td", {}, h("a", { href: `#/bot/${t.user_id}` }, t.user_id)), h("td", { class: "num" }, number(t.value))))))
        : h("p", { class: "note" }, "no usage recorded in the last 24 h"),
    );
  };

  const loadIncidents = async () => {
    const history = await call("/admin/system/bot-health/unhealthy-history", { params: { hours: 24 } });
    const rows = history.rows.slice(-20).reverse();
    incidentsBox.replaceChildren(
      rows.length
        ? h("table", {},
            h("thead", {}, h("tr", {}, h("th", {}, "when"), h("th", {}, "bot"), h("th", {}, "status"), h("th", {}, "breaker"), h("th", {}, "last error"))),
            h("tbody", {}, rows.map((r) =>
              h("tr", {},
                h("td", {}, when(r.recorded_at)),
                h("td", {}, h("a", { href: `#/bot/${r.user_id}` }, r.user_id)),
                h("td", {}, badge(r.status)),
                h("td", {}, badge(r.circuit_state)),
                h("td", { class: "wrap" }, r.last_error ?? "—")))))
        : h("p", { class: "note" }, "no bot was recorded unhealthy in the last 24 h"),
    );
    if (history.truncated) incidentsBox.append(h("p", { class: "note" }, "(more rows than shown: the API truncated them)"));
  };

  // The counts first: they make the page useful; the rest follows (the rate chart too).
  drawSummary(await fleetSummary());
  view.dataset.ready = "true";
  drawRate();
  const rest = [loadUsage(), loadTop(), loadIncidents()].map((p) => p.catch(ctx.failed));
  const timer = setInterval(() => refreshSummary().catch(ctx.failed), SAMPLE_MS);
  let pending = null;
  const stop = openStream({
    list: events,
    indicator: ctx.indicator,
    onEvent: () => {
      // Several transitions at once cost one refresh of the counts.
      if (pending) return;
      pending = setTimeout(() => {
        pending = null;
        refreshSummary().catch(ctx.failed);
      }, 500);
    },
  });
  Promise.all(rest).then(() => {
    view.dataset.loaded = "true";
  });
  return () => {
    clearInterval(timer);
    clearTimeout(pending);
    stop();
  };
}
