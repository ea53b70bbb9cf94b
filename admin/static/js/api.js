// The admin API as the page uses it: the token from sessionStorage as a bearer header.
// A 401 signs the page out (the caller shows the sign-in form with the message).

const KEY = "botvisor.admin-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Unauthorized extends ApiError {}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

// Through the fleet gateway (botvisor gateway), a fleet answer says which shards answered:
// {"total": 3, "ok": 2, "failed": [{"shard": 1, "error": "timeout after 2 s"}]}. The latest
// one is kept (the page may load before the banner's script runs) and announced.
let shards = null;

export function lastShards() {
  return shards;
}

function noteShards(body) {
  if (!body || typeof body !== "object" || !body.shards || !Array.isArray(body.shards.failed)) return;
  shards = body.shards;
  window.dispatchEvent(new CustomEvent("botvisor:shards", { detail: shards }));
}

// What went wrong, in the API's own words ({"error": {"message": ...}}) when it gave any.
async function failure(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    noteShards(body);
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  const Kind = response.status === 401 ? Unauthorized : ApiError;
  return new Kind(response.status, message);
}

// GET or POST a JSON route. `params` become the query string (never the token).
export async function call(path, { method = "GET", params = null, body = undefined, bearer = null } = {}) {
  const url = new URL(path, location.origin);
  if (params) {
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
  }
  const headers = { Accept: "application/json", Authorization: `Bearer ${bearer ?? token() ?? ""}` };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (exc) {
    throw new ApiError(0, `the admin server did not answer (${exc.message})`);
  }
  if (!response.ok) throw await failure(response);
  const answer = await response.json();
  noteShards(answer);
  return answer;
}

// The WebSocket sign-in: a browser cannot send headers on a WebSocket, so the token travels
// as a subprotocol entry (base64url, unpadded), never in the URL.
export function tokenSubprotocol(value) {
  const bytes = new TextEncoder().encode(value);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  const b64 = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `base64url.bearer.botvisor.${b64}`;
}
