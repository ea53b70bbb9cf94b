// The fleet's counts, asked for as early as the page can: this small module is loaded with
// `async`, so it runs as soon as it and api.js have arrived, while the browser is still
// fetching and evaluating the rest of the page. The overview takes the answer (once) for its
// first drawing instead of asking only after every module has run.

import { call, token } from "./api.js";

const SUMMARY = "/admin/system/bot-health/summary";

let early = null;
if (token() && (location.hash.replace(/^#/, "") || "/") === "/") {
  early = call(SUMMARY);
  // Taken later, or never (a route changed first): a failure is handled by whoever takes it.
  early.catch(() => {});
}

// The summary asked for at load, once; after that (or when none was asked for) a new call.
export function fleetSummary() {
  const answer = early ?? call(SUMMARY);
  early = null;
  return answer;
}
