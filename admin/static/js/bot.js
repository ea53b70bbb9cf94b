// One bot: status, breaker (reset), suspend/resume, health-history and usage charts, dead
// letters (redrive/discard) and its live events.

import { ApiError, call } from "./api.js";
import { chartCard, lastDay, lineChart } from "./charts.js";
import { badge, clear, errorBox, h, number, when } from "./dom.js";
import { openStream } from "./live.js";

const HOURS = [1, 6, 24, 72, 168];
const DEAD_PAGE = 50;

export async function botPage(view, ctx, userId) {
  const base = `/admin/bots/${userId}`;
  const flash = h("div", { "data-testid": "flash" });
  const facts = h("dl", { class: "facts", "data-testid": "bot-facts" });
  const breakerState = h("span", { "data-testid": "breaker-state" });
  const statusState = h("span", { "data-testid": "bot-status" });
  const resetButton = h("button", { type: "button", "data-testid": "reset-breaker", onclick: () => act("breaker reset", `/admin/system/circuit-breakers/${userId}/reset`) }, "Reset breaker");
  const suspendButton = h("button", { type: "button", class: "danger", "data-testid": "suspend", onclick: () => act("suspended", `${base}/suspend`, { reason: "suspended from the dashboard" }) }, "Suspend");
  const resumeButton = h("button", { type: "button", "data-testid": "resume", onclick: () => act("resumed", `${base}/resume`) }, "Resume");

  const hoursSelect = h("select", { "aria-label": "hours of history", "data-testid": "hours", onchange: () => loadHistory().catch((e) => ctx.failed(e, flash)) },
    HOURS.map((n) => h("option", { value: n, selected: n === 24 }, n === 1 ? "last hour" : `last ${n} h`)));
  const errorChart = chartCard("Error rate", "chart-error-rate", "failed share of calls between two snapshots of the health history");
  const latencyChart = chartCard("Average response time", "chart-latency");
  const volumeChart = chartCard("Request volume", "chart-volume", "Bot API calls between two snapshots");
  const typesChart = chartCard("Updates by type (per hour, last 24 h)", "chart-update-types");
  const sendsChart = chartCard("Sends and distinct users (per hour)", "chart-sends");
  const p95Chart = chartCard("Reply latency p95 (per hour)", "chart-p95", "upper bound of the latency bucket holding the 95th percentile");

  const deadBox = h("div", { "data-testid": "dead-letters" }, "loading…");
  const deadReason = h("input", { type: "search", placeholder: "reason contains…", "aria-label": "reason contains" });
  const events = h("ul", { class: "events", "data-testid": "events" });

  view.append(
    h("p", {}, h("a", { href: "#/bots" }, "← all bots")),
    h("h1", {}, `Bot ${userId}`),
    flash,
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Status"), h("p", {}, statusState), facts,
        h("div", { class: "row" }, suspendButton, resumeButton)),
      h("section", { class: "card" }, h("h2", {}, "Circuit breaker"), h("p", {}, breakerState),
        h("dl", { class: "facts", "data-testid": "breaker-facts" }), h("div", { class: "row" }, resetButton))),
    h("section", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Health history"), h("span", { class: "spacer" }), hoursSelect)),
    h("div", { class: "grid" }, errorChart.card, latencyChart.card, volumeChart.card),
    h("div", { class: "grid" }, typesChart.card, sendsChart.card, p95Chart.card),
    h("section", { class: "card" },
      h("div", { class: "row" }, h("h2", {}, "Dead letters"), h("span", { class: "spacer" }),
        deadReason,
        h("button", { type: "button", onclick: () => bulk("redrive", { reason_contains: deadReason.value }) }, "Redrive matching"),
        h("button", { type: "button", "data-testid": "redrive-all", onclick: () => bulk("redrive", { all: true }) }, "Redrive all"),
        h("button", { type: "button", class: "danger", onclick: () => bulk("discard", { all: true }) }, "Discard all")),
      deadBox),
    h("section", { class: "card" }, h("h2", {}, "Live events of this bot"), events),
  );

  function say(text, isError = false) {
    clear(flash, isError ? errorBox(text) : h("p", { class: "flash", role: "status" }, text));
  }

  async function act(done, path, body = undefined) {
    try {
      await call(path, { method: "POST", body });
      say(`Bot ${userId}: ${done}.`);
    } catch (exc) {
      if (ctx.failed(exc, null, true)) return; // signed out
      say(exc.message, true);
    }
    await loadStatus().catch((e) => ctx.failed(e, flash));
  }

  async function loadStatus() {
    const [bot, health, breaker] = await Promise.all([
      call(base),
      call(`/admin/system/bot-health/${userId}`),
      call(`/admin/system/circuit-breakers/${userId}`),
    ]);
    clear(statusState, badge(health.status), " ", health.suspended_reason ? `(${health.suspended_reason})` : "");
    statusState.dataset.value = health.status;
    clear(facts,
      ...[
        ["state", bot.state],
        ["mode", bot.mode],
        ["handler", bot.handler],
        ["requests", `${number(health.total_requests)} (${number(health.failed_requests)} failed)`],
        ["error rate", `${number(health.error_rate * 100, 2)} %`],
        ["avg response", `${number(health.avg_response_time_ms, 1)} ms`],
        ["handled updates", number(health.handled_updates)],
        ["replies sent", number(health.replies_sent)],
        ["dead letters", number(health.dead_letters)],
        ["last success", when(health.last_success_at)],
        ["last error", health.last_error ?? "—"],
      ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    clear(breakerState, badge(breaker.state));
    breakerState.dataset.value = breaker.state;
    clear(view.querySelector('[data-testid="breaker-facts"]'),
      ...[
        ["consecutive failures", breaker.consecutive_failures],
        ["opened at", when(breaker.opened_at)],
        ["rejected calls", number(breaker.rejected_count)],
        ["transitions", number(breaker.transitions)],
      ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    resetButton.disabled = breaker.state === "closed";
    const suspended = health.status === "suspended";
    suspendButton.disabled = suspended;
    resumeButton.disabled = !suspended;
  }

  async function loadHistory() {
    const history = await call(`/admin/system/bot-health/history/${userId}`, { params: { hours: hoursSelect.value } });
    const rows = history.rows;
    const xs = [];
    const errors = [];
    const latency = [];
    const volume = [];
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i];
      const before = rows[i - 1];
      xs.push(row.recorded_at);
      latency.push(row.avg_response_time_ms);
      // Counters are cumulative; a drop means the bot restarted and counts from zero again.
      const calls = before && row.total_requests >= before.total_requests ? row.total_requests - before.total_requests : row.total_requests;
      const failed = before && row.failed_requests >= before.failed_requests ? row.failed_requests - before.failed_requests : row.failed_requests;
      volume.push(calls);
      errors.push(calls > 0 ? (100 * failed) / calls : 0);
    }
    const empty = `no health snapshots in the last ${hoursSelect.value} h (they are written every storage.persist_interval)`;
    lineChart(errorChart.box, xs, [{ label: "error rate %", values: errors }], { yLabel: "%", empty });
    lineChart(latencyChart.box, xs, [{ label: "avg ms", values: latency }], { yLabel: "ms", empty });
    lineChart(volumeChart.box, xs, [{ label: "calls", values: volume }], { yLabel: "calls", empty });
  }

  async function loadUsage() {
    const usage = await call("/admin/analytics/usage", { params: { user_id: userId, bucket: "hour" } });
    const xs = usage.rows.map((r) => Date.parse(r.start) / 1000);
    const types = [...new Set(usage.rows.flatMap((r) => Object.keys(r.updates_by_type)))].sort();
    const empty = "no usage recorded in the last 24 h";
    lineChart(typesChart.box, xs, types.map((t) => ({ label: t, values: usage.rows.map((r) => r.updates_by_type[t] ?? 0) })), { yLabel: "updates", empty, xRange: lastDay() });
    lineChart(sendsChart.box, xs, [
      { label: "sends", values: usage.rows.map((r) => r.sends) },
      { label: "distinct users", values: usage.rows.map((r) => r.distinct_users) },
    ], { empty, xRange: lastDay() });
    lineChart(p95Chart.box, xs, [{ label: "p95 ms", values: usage.rows.map((r) => r.reply_latency_p95_ms) }], { yLabel: "ms", empty, xRange: lastDay() });
  }

  async function loadDeadLetters() {
    let answer;
    try {
      answer = await call(`${base}/dead-letters`, { params: { limit: DEAD_PAGE } });
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 404) {
        clear(deadBox, h("p", { class: "note" }, `dead letters are not available: ${exc.message}`));
        return;
      }
      throw exc;
    }
    if (!answer.dead_letters.length) {
      clear(deadBox, h("p", { class: "note" }, "no dead letters"));
      return;
    }
    clear(deadBox,
      h("p", { class: "note" }, `${number(answer.total)} in all; the newest ${answer.dead_letters.length} shown`),
      h("table", {},
        h("thead", {}, h("tr", {}, ["id", "update", "chat", "type", "reason", "recorded", "redriven", "payload", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, answer.dead_letters.map((d) =>
          h("tr", { "data-dead-letter": d.id },
            h("td", {}, d.id),
            h("td", {}, d.update_id),
            h("td", {}, d.chat_id ?? "—"),
            h("td", {}, d.update_type ?? "—"),
            h("td", { class: "wrap" }, d.reason),
            h("td", {}, when(d.recorded_at)),
            h("td", { "data-testid": "redriven-at" }, when(d.redriven_at)),
            h("td", {}, d.payload ? h("pre", { class: "payload" }, JSON.stringify(d.payload, null, 1)) : "—"),
            h("td", {},
              h("div", { class: "row" },
                h("button", { type: "button", "data-testid": "redrive", disabled: Boolean(d.redriven_at), onclick: () => bulk("redrive", { ids: [d.id] }) }, "Redrive"),
                h("button", { type: "button", class: "danger", onclick: () => bulk("discard", { ids: [d.id] }) }, "Discard"))))))));
  }

  async function bulk(action, body) {
    if (body.reason_contains !== undefined && !body.reason_contains.trim()) {
      say("Type part of a reason first.", true);
      return;
    }
    try {
      const answer = await call(`${base}/dead-letters/${action}`, { method: "POST", body });
      if (action === "redrive") {
        const refused = answer.refused && answer.refused.length ? `; refused ${answer.refused.length}` : "";
        say(`Redriven ${answer.redriven} dead letter(s) into the inbox${refused}.`);
      } else {
        say(`Discarded ${answer.discarded} dead letter(s).`);
      }
    } catch (exc) {
      if (ctx.failed(exc, null, true)) return; // signed out
      say(exc.message, true);
    }
    await loadDeadLetters().catch((e) => ctx.failed(e, flash));
  }

  try {
    await loadStatus();
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) {
      clear(view, h("h1", {}, `Bot ${userId}`), errorBox(exc.message), h("p", {}, h("a", { href: "#/bots" }, "← all bots")));
      return () => {};
    }
    throw exc;
  }
  view.dataset.ready = "true";
  const rest = [loadHistory(), loadUsage(), loadDeadLetters()].map((p) => p.catch((e) => ctx.failed(e, flash)));
  const stop = openStream({
    list: events,
    indicator: ctx.indicator,
    userId,
    onEvent: () => loadStatus().catch((e) => ctx.failed(e, flash)),
  });
  Promise.all(rest).then(() => {
    view.dataset.loaded = "true";
  });
  return stop;
}
