// Building DOM nodes without parsing HTML: every text is set as text, so nothing the API
// returns (a bot's last error, a dead letter's reason) can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(value) {
  return h("span", { class: `badge s-${value}` }, String(value ?? "unknown").replace("_", " "));
}

// A time as the API gives it (epoch seconds, or ISO-8601 text), in UTC.
export function when(value) {
  if (value === null || value === undefined) return "—";
  const d = typeof value === "string" ? new Date(value) : new Date(value * 1000);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}

export function counts(entries, testid) {
  return h(
    "ul",
    { class: "counts", "data-testid": testid },
    entries.map(([key, n]) =>
      h("li", { "data-key": key }, h("span", { class: "n" }, number(n)), h("span", { class: "k" }, key.replace("_", " "))),
    ),
  );
}
