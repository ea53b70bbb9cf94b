// The dashboard's entry: sign-in, sign-out and the three views (#/, #/bots, #/bot/N).
// The route lives in the URL's fragment; the token never does.

import { ApiError, Unauthorized, call, forgetToken, keepToken, lastShards, token } from "./api.js";
import { errorBox, h } from "./dom.js";
import { overview } from "./overview.js";

// The other views are loaded when first shown: the overview, the page most loads open, does
// not wait for their scripts (each module imported here is fetched before any of it runs).
const botView = () => import("./bot.js");
const listView = () => import("./botlist.js");

const $ = (id) => document.getElementById(id);
const signInCard = $("sign-in");
const signInError = $("sign-in-error");
const view = $("view");
const nav = $("nav");
let stopView = () => {};
let generation = 0;

function showSignIn(message = "", isError = true) {
  banner.hidden = true;
  stopView();
  stopView = () => {};
  view.hidden = true;
  view.replaceChildren();
  nav.hidden = true;
  signInCard.hidden = false;
  signInError.hidden = !message;
  signInError.textContent = message;
  signInError.className = isError ? "error" : "flash";
  $("token").value = "";
  $("token").focus();
}

function signOut(message = "", isError = true) {
  forgetToken();
  showSignIn(message, isError);
}

// A failed call: a 401 signs out (true); anything else is shown in `box`, or on the view.
function failed(exc, box = null, quiet = false) {
  if (exc instanceof Unauthorized) {
    signOut(`The admin server refused the token (401: ${exc.message}). Sign in again.`);
    return true;
  }
  if (quiet) return false;
  const message = exc instanceof ApiError ? exc.message : `the page failed: ${exc.message}`;
  (box ?? view).prepend(errorBox(message));
  if (!(exc instanceof ApiError)) console.error(exc);
  return false;
}

const ctx = { failed, indicator: $("live") };

// Through the gateway: a banner while the latest fleet answer lacks some shards (their bots
// are missing from the counts and lists); hidden again once every shard answers.
const banner = $("shards-banner");
function showShards(shards) {
  if (!shards || !shards.failed.length) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const lines = shards.failed.map((f) => h("li", { "data-shard": f.shard }, `shard ${f.shard} did not answer (${f.error})`));
  banner.replaceChildren(
    h("strong", {}, `${shards.failed.length} of ${shards.total} shards did not answer: their bots are missing below.`),
    h("ul", {}, lines),
  );
  banner.hidden = false;
}
window.addEventListener("botvisor:shards", (event) => showShards(event.detail));
showShards(lastShards());

async function route() {
  if (!token()) {
    showSignIn();
    return;
  }
  const mine = ++generation;
  stopView();
  stopView = () => {};
  signInCard.hidden = true;
  nav.hidden = false;
  view.hidden = false;
  view.replaceChildren();
  delete view.dataset.ready;
  delete view.dataset.loaded;
  const path = location.hash.replace(/^#/, "") || "/";
  const bot = /^\/bot\/(\d{1,20})$/.exec(path);
  try {
    let stop;
    if (bot) stop = await (await botView()).botPage(view, ctx, bot[1]);
    else if (path === "/bots") stop = await (await listView()).botList(view, ctx);
    else stop = await overview(view, ctx);
    if (mine !== generation) stop();
    else stopView = stop;
  } catch (exc) {
    if (mine === generation) failed(exc);
  }
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  const button = event.submitter ?? event.target.querySelector("button");
  if (!value) return;
  button.disabled = true;
  try {
    // One call proves the token before the page keeps it.
    await call("/admin/system/bot-health/summary", { bearer: value });
    keepToken(value);
    signInError.hidden = true;
    await route();
  } catch (exc) {
    signInError.hidden = false;
    signInError.className = "error";
    signInError.textContent =
      exc instanceof Unauthorized
        ? "That token was refused by the admin server (401). Check it and try again."
        : `Could not sign in: ${exc.message}`;
  } finally {
    button.disabled = false;
  }
});

$("sign-out").addEventListener("click", () => signOut("Signed out: the token is forgotten in this tab.", false));
window.addEventListener("hashchange", route);

// uPlot is a classic deferred script: it has run by the time modules run.
route().then(() => {
  // Once the first view is drawn, the others' scripts are fetched, so a click does not wait.
  botView().catch(() => {});
  listView().catch(() => {});
});
