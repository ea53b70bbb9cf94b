// The live event stream: /admin/events over a WebSocket, signed in with the subprotocol.

import { token, tokenSubprotocol } from "./api.js";
import { h, when } from "./dom.js";

const KEEP = 200;

export function describe(event) {
  switch (event.type) {
    case "status":
      return `bot ${event.user_id}: status ${event.previous} → ${event.status}${event.reason ? ` (${event.reason})` : ""}`;
    case "breaker":
      return `bot ${event.user_id}: breaker ${event.previous} → ${event.state}${event.reason ? ` (${event.reason})` : ""}`;
    case "lifecycle":
      return `bot ${event.user_id}: ${event.event}${event.detail ? ` (${event.detail})` : ""}`;
    case "shard":
      return event.state === "down"
        ? `shard ${event.shard}: its live events stopped (${event.error}); reconnecting`
        : `shard ${event.shard}: its live events are back`;
    default:
      return `${event.type}: ${JSON.stringify(event)}`;
  }
}

// Opens a stream (of one bot if userId is given); returns a function that closes it.
// onEvent gets each transition; the list element shows them newest first.
export function openStream({ list, indicator, userId = null, onEvent = () => {} }) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(`${scheme}//${location.host}/admin/events`);
  if (userId !== null) url.searchParams.set("user_id", userId);
  let socket = null;
  let closed = false;
  let retry = null;
  let delay = 1000;

  const show = (text, cls = "") => {
    list.prepend(h("li", { class: cls }, text));
    while (list.children.length > KEEP) list.lastChild.remove();
  };
  const state = (on, text) => {
    if (!indicator) return;
    indicator.classList.toggle("on", on);
    indicator.textContent = text;
  };

  const connect = () => {
    socket = new WebSocket(url, ["botvisor.events", tokenSubprotocol(token() ?? "")]);
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      if (event.type === "subscribed") {
        delay = 1000;
        state(true, "live: on");
        // Through the gateway: the shards whose streams could not be opened.
        for (const f of event.shards?.failed ?? []) show(`shard ${f.shard}: no live events (${f.error})`, "e-shard");
        return;
      }
      show(`${when(event.at)}  ${describe(event)}`, `e-${event.type}`);
      onEvent(event);
    });
    socket.addEventListener("close", (e) => {
      state(false, "live: off");
      if (closed) return;
      if (e.code === 1008 || e.code === 1001) show(`stream closed: ${e.reason || e.code}; reconnecting`);
      retry = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  };
  connect();
  return () => {
    closed = true;
    clearTimeout(retry);
    if (socket) socket.close(1000);
    state(false, "live: off");
  };
}
