// The dashboard's one door to /api/v1: the token, errors, the unreachable banner, SSE, downloads.

const BASE = "/api/v1";
const TOKEN_KEY = "slimpipe.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

// Every request names itself: without a token the server refuses POST/DELETE that lack this header
// or a JSON body (a cross-site page can send neither without a preflight the server never grants).
export function authHeaders() {
  const t = token();
  return { "X-Slimpipe-Request": "1", ...(t ? { Authorization: `Bearer ${t}` } : {}) };
}

// --- banner: one message for "the API is down", cleared by the next answer.
let failures = 0;
export function showBanner(message) {
  const banner = document.getElementById("api-banner");
  banner.textContent = message;
  banner.hidden = false;
}
function clearBanner() {
  failures = 0;
  const banner = document.getElementById("api-banner");
  if (banner.dataset.kind !== "sticky") banner.hidden = true;
}
function unreachable(status, detail) {
  failures += 1;
  showBanner(
    detail // the service is up and says why (503: its database is restarting)
      ? `The slimpipe API answered HTTP ${status}: ${detail}. The page retries on its own.`
      : `Cannot reach the slimpipe API: ${location.origin}${BASE} ${status ? `answered HTTP ${status}` : "did not answer"}. ` +
          "Is `slimpipe serve` running? The page retries on its own.",
  );
}

// An error a page waits out and loads again after (no answer, or a gateway or service saying "later").
export function retryable(err) {
  return err instanceof ApiError && (err.status === 0 || (err.status >= 502 && err.status <= 504));
}

// --- token: asked once when the API answers 401, kept in localStorage.
let tokenPrompt = null;
function askToken(rejected) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").hidden = !rejected;
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const value = input.value.trim();
        if (value) localStorage.setItem(TOKEN_KEY, value);
        tokenPrompt = null;
        resolve(value);
      },
      { once: true },
    );
  });
  input.value = "";
  dialog.showModal();
  return tokenPrompt;
}

// A fresh write key (`Idempotency-Key`): a write sent again under it after a lost answer is stored once.
// crypto.randomUUID() exists only on https and localhost; getRandomValues everywhere.
export function writeKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function api(path, { method = "GET", body, raw = false, query, headers: extra = {} } = {}) {
  let url = BASE + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  for (let attempt = 0; attempt < 4; attempt++) {
    const headers = { ...authHeaders(), ...extra };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      unreachable(0);
      throw new ApiError(0, "the API is unreachable");
    }
    if (response.status === 401) {
      const given = await askToken(attempt > 0 || !!token());
      if (!given) throw new ApiError(401, "an API token is required");
      continue;
    }
    if (response.status >= 502 && response.status <= 504) {
      let detail = "";
      try {
        detail = (await response.json()).detail;
      } catch {}
      unreachable(response.status, typeof detail === "string" ? detail : "");
      throw new ApiError(response.status, "the API is unreachable");
    }
    clearBanner();
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try {
        detail = (await response.json()).detail ?? detail;
      } catch {}
      throw new ApiError(response.status, detail);
    }
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }
  throw new ApiError(401, "the API token was rejected");
}

// Retry a run under a key kept until the service answers: clicked again after a lost answer, the service
// answers with the retry it made the first time instead of making a second. Answered, the next click is a
// new retry.
const retryKeys = new Map();
export async function retryRun(runId) {
  if (!retryKeys.has(runId)) retryKeys.set(runId, writeKey());
  const made = await api(`/runs/${runId}/retry`, { method: "POST", headers: { "Idempotency-Key": retryKeys.get(runId) } });
  retryKeys.delete(runId);
  return made;
}

// Server-Sent Events: EventSource cannot send headers, so the token rides in the query string. A browser
// reconnects by itself after a network error, but gives up for good on an error status (a 503 while the
// database restarts): the stream is then opened again where it stopped (`cursor`, its last event id), after
// 1 s, doubling up to 10 s, until close(). `onError` is told of every error.
export function events(path, handlers, onError = () => {}) {
  let source = null, closed = false, lastId = "", wait = 1000, timer = null;
  const open = () => {
    const query = new URLSearchParams();
    const t = token();
    if (t) query.set("token", t);
    if (lastId) query.set("cursor", lastId);
    const q = query.toString();
    source = new EventSource(BASE + path + (q ? `${path.includes("?") ? "&" : "?"}${q}` : ""));
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => {
        if (e.lastEventId) lastId = e.lastEventId;
        wait = 1000;
        fn(JSON.parse(e.data));
      });
    }
    source.onerror = () => {
      onError();
      if (closed || source.readyState !== EventSource.CLOSED) return; // CONNECTING: the browser tries again
      timer = setTimeout(open, wait);
      wait = Math.min(2 * wait, 10000);
    };
  };
  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      source.close();
    },
  };
}

// Downloads go through fetch so the Authorization header is sent; the blob is saved under its name.
export async function download(path, fallbackName) {
  const response = await api(path, { raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const blob = await response.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// Benchmarks and tests wait for this: the page has drawn its data.
export function markReady() {
  if (document.documentElement.dataset.ready) return;
  window.__slimpipeReady = performance.now();
  document.documentElement.dataset.ready = "1";
}

document.getElementById("token-button")?.addEventListener("click", () => askToken(false).then(() => location.reload()));
if (token()) {
  const b = document.getElementById("token-button");
  if (b) b.hidden = false;
}
