// The bot list: one page at a time from GET /admin/bots (limit, cursor, filters, search),
// so a fleet of 10,000 never travels as one document.

import { call } from "./api.js";
import { badge, clear, h, number } from "./dom.js";

const PAGE = 50;
const CHOICES = {
  status: ["healthy", "degraded", "unhealthy", "suspended"],
  breaker: ["closed", "open", "half_open", "disabled", "forced_open"],
  mode: ["polling", "webhook"],
};

export async function botList(view, ctx) {
  const filters = { status: "", breaker: "", mode: "", q: "" };
  const cursors = [null]; // cursors[i]: where page i starts
  let page = 0;

  const selects = Object.entries(CHOICES).map(([name, values]) =>
    h("select", { name, "aria-label": name, onchange: (e) => { filters[name] = e.target.value; restart(); } },
      h("option", { value: "" }, `any ${name}`), values.map((v) => h("option", { value: v }, v.replace("_", " ")))),
  );
  const search = h("input", { type: "search", name: "q", placeholder: "user_id contains…", inputmode: "numeric", "aria-label": "search user_id" });
  const searchForm = h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); filters.q = search.value.trim(); restart(); } },
    search, h("button", { type: "submit" }, "Search"));
  const prev = h("button", { type: "button", onclick: () => { page -= 1; load(); } }, "← Previous");
  const next = h("button", { type: "button", onclick: () => { page += 1; load(); } }, "Next →");
  const info = h("span", { class: "note", "data-testid": "bots-matching" });
  const message = h("div");
  const table = h("tbody", { "data-testid": "bot-rows" });

  view.append(
    h("h1", {}, "Bots"),
    h("section", { class: "card" },
      h("div", { class: "row" }, selects, searchForm, h("span", { class: "spacer" }), info, prev, next),
      message,
      h("table", {},
        h("thead", {}, h("tr", {}, ["bot", "status", "breaker", "mode", "state", "handler", "source"].map((c) => h("th", {}, c)))),
        table)));

  function restart() {
    cursors.length = 1;
    page = 0;
    load();
  }

  async function load() {
    message.replaceChildren();
    let answer;
    try {
      answer = await call("/admin/bots", { params: { limit: PAGE, cursor: cursors[page], ...filters } });
    } catch (exc) {
      ctx.failed(exc, message);
      return;
    }
    cursors[page + 1] = answer.next_cursor;
    clear(table, answer.bots.map((b) =>
      h("tr", { "data-user-id": b.user_id },
        h("td", {}, h("a", { href: `#/bot/${b.user_id}` }, b.user_id)),
        h("td", {}, badge(b.status)),
        h("td", {}, badge(b.circuit_state)),
        h("td", {}, b.mode),
        h("td", {}, b.state),
        h("td", {}, b.handler),
        h("td", {}, b.source))));
    const first = page * PAGE + 1;
    info.textContent = answer.count
      ? `${number(first)}–${number(first + answer.count - 1)} of ${number(answer.matching)} matching`
      : `none of the bots match`;
    prev.disabled = page === 0;
    next.disabled = answer.next_cursor === null || answer.next_cursor === undefined;
    view.dataset.ready = "true";
  }

  await load();
  return () => {};
}
