// What every page of the dashboard shares: the API client, the session's state, messages, and
// the words and formats the CLI uses too.

// The dashboard: plain JavaScript over the HTTP API (docs/api.md), served by the control plane.
// The token stays in sessionStorage; every request sends it as a bearer token. The environment's
// snapshot stream (read through fetch, since EventSource cannot send headers) triggers refreshes.

export const $ = (selector) => document.querySelector(selector);

export const escape = (text) =>
  String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export const state = { token: sessionStorage.getItem("rollgate-token"), environment: null, stream: null, refreshing: null };

/** Calls the API; throws an Error carrying the problem's detail. */
export async function api(method, path, body, ifMatch) {
  return (await exchange(method, path, body, ifMatch)).data;
}

/** A resource and its revision (ETag), read together: what an edit sends back as If-Match. */
export async function read(path) {
  return exchange("GET", path);
}

async function exchange(method, path, body, ifMatch) {
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${state.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
      ...(ifMatch ? { "if-match": ifMatch } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const etag = response.headers.get("etag");
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(data?.detail ?? `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.path = data?.path;
    throw error;
  }
  return { data, etag };
}

export function toast(message, isError = false) {
  const item = document.createElement("div");
  item.textContent = message;
  if (isError) item.className = "error";
  $("#toast").append(item);
  setTimeout(() => item.remove(), isError ? 8000 : 4000);
}

/** Asks for a reason in a modal; resolves to it, or to null if cancelled. */
export function confirmWithReason(title, text, action, reason = "") {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = action;
  $("#confirm-reason").value = reason;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const reason = $("#confirm-reason").value.trim();
      resolve(dialog.returnValue === "ok" && reason ? reason : null);
    }, { once: true });
  });
}

/** A UTC timestamp in the reader's local time, with UTC on hover. */
export function time(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return escape(iso);
  return `<time datetime="${escape(iso)}" title="${escape(iso)}">${escape(at.toLocaleString())}</time>`;
}

/** A verdict in the words the CLI and the notifications use. */
export const VERDICTS = { pass: "pass", fail: "fail", insufficient: "insufficient data" };

/** `2.13%`, as the CLI writes a rate. */
export const percent = (rate) => `${Number((100 * rate).toFixed(2))}%`;

/** `0.52 points`: a difference of rates in percentage points, as the CLI writes it. */
export const points = (difference) => `${Number((100 * difference).toFixed(2)) || 0} points`;

/**
 * A reading's interval in the CLI's words: a sequential criterion's rise over control
 * (`0.88 points over control (0.31 to 1.44 points)`) or the sample ratio's share
 * (`4.6% to 5.4% at 99.9%`); "" for a fixed bound.
 */
export function interval(reading) {
  const { difference: d, share } = reading;
  if (d) return `${points(d.estimate)} over control (${points(d.low).replace(" points", "")} to ${points(d.high)})`;
  if (share) return `${percent(share.low)} to ${percent(share.high)} at ${percent(share.confidence)}`;
  return "";
}

/** `errors/requests <= 2%: 0.5% (9 of 1800), pass`: a reading as the notifications write it. */
export function describeReading(r) {
  const rate = r.variant.per ? percent(r.variant.metric / r.variant.per) : "—";
  const around = interval(r);
  return `${r.criterion}: ${rate} (${r.variant.metric} of ${r.variant.per})${around ? `, ${around}` : ""}`;
}

/** `2d`, `1d 12h`, `45m`: as the CLI and the notifications write durations. */
export function duration(seconds) {
  const parts = [[Math.floor(seconds / 86400), "d"], [Math.floor(seconds % 86400 / 3600), "h"], [Math.floor(seconds % 3600 / 60), "m"]]
    .filter(([n]) => n > 0).map(([n, unit]) => `${n}${unit}`);
  return parts.length ? parts.join(" ") : `${seconds}s`;
}

/** Runs a change and says how it went; true if it was made. */
export async function attempt(work, done) {
  try {
    await work();
    toast(done);
    return true;
  } catch (error) {
    toast(error.message, true);
    return false;
  }
}
