// Drives the in-process providers as an app would, through OpenFeature: the Rust provider in
// its probe program (sdks/rust/examples/probe.rs), which answers JSON lines on stdout, and the
// Node provider (sdks/node) in this process. Both give the same interface.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Starts the Rust probe against `url` with a read `token` for `environment`. Options:
 * `bootstrap` and `saveTo` (snapshot files), `metricsMs` (how often counts are reported).
 * Resolves once OpenFeature initialized it, to
 * { events, next(kind, after), evaluate(flag, type, context), track(...), flush(), stop(), exited }.
 */
export async function startRustProvider({ url, token, environment = "production", bootstrap, saveTo, metricsMs }) {
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  const env = { ...process.env, ROLLGATE_URL: url, ROLLGATE_TOKEN: token, ROLLGATE_ENV: environment, RUST_LOG: "warn" };
  if (bootstrap) env.ROLLGATE_BOOTSTRAP = bootstrap;
  if (saveTo) env.ROLLGATE_SAVE_TO = saveTo;
  if (metricsMs) env.ROLLGATE_METRICS_MS = String(metricsMs);
  const child = spawn(join(target, "release", "examples", "probe"), [], { env, stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));

  const events = [];
  const waiting = new Map();
  const watchers = new Set();
  let started;
  const ready = new Promise((resolve) => (started = resolve));
  createInterface({ input: child.stdout }).on("line", (line) => {
    const message = JSON.parse(line);
    if (message.started) return started(message);
    if (message.event) {
      events.push({ ...message, at: performance.now() });
      for (const watcher of watchers) watcher();
      return;
    }
    waiting.get(message.id)?.(message);
    waiting.delete(message.id);
  });
  let nextId = 0;
  const request = (body) => new Promise((resolve, reject) => {
    const id = ++nextId;
    waiting.set(id, resolve);
    child.stdin.write(`${JSON.stringify({ id, ...body })}\n`, (error) => error && reject(error));
  });
  await Promise.race([ready, exited.then((code) => { throw new Error(`the probe exited with ${code}`); })]);
  return {
    events,
    next: eventWaiter(events, watchers),
    evaluate: async (flag, type, context) => (await request({ op: "evaluate", flag, type, context })).answer,
    track: (flag, variant, metric, count) => request({ op: "track", flag, variant, metric, count }),
    flush: () => request({ op: "flush" }),
    stop: async () => {
      child.stdin.end();
      await exited;
    },
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
    exited,
  };
}

/**
 * `next(kind, {after, test, ms})`: the first event of `kind` in `events` from index `after` on
 * (and satisfying `test`), waiting up to `ms`; `watchers` are called as events arrive.
 */
function eventWaiter(events, watchers) {
  return (kind, { after = 0, test = () => true, ms = 10000 } = {}) => new Promise((resolve, reject) => {
    const check = () => {
      const found = events.slice(after).find((e) => e.event === kind && test(e));
      if (!found) return false;
      watchers.delete(check);
      clearTimeout(timer);
      resolve(found);
      return true;
    };
    const timer = setTimeout(() => {
      watchers.delete(check);
      reject(new Error(`no ${kind} within ${ms} ms; events: ${JSON.stringify(events)}`));
    }, ms);
    watchers.add(check);
    check();
  });
}

let domains = 0;

/**
 * The Node provider (sdks/node, after its `build`) in this process, registered with the
 * OpenFeature server SDK under a domain of its own; the same interface as startRustProvider.
 */
export async function startNodeProvider({ url, token, environment = "production", bootstrap, saveTo, metricsMs }) {
  const { OpenFeature, ProviderEvents } = await import("@openfeature/server-sdk");
  const { RollgateProvider } = await import("../sdks/node/src/index.js");
  const provider = new RollgateProvider({ url, token, environment, bootstrap, saveTo, maxBackoffMs: 2000,
    ...(metricsMs ? { metricsIntervalMs: metricsMs } : {}) });
  const events = [];
  const watchers = new Set();
  for (const kind of [ProviderEvents.Ready, ProviderEvents.ConfigurationChanged, ProviderEvents.Stale, ProviderEvents.Error]) {
    provider.events.addHandler(kind, (details) => {
      events.push({ event: kind, version: details?.metadata?.version ?? null, flagsChanged: details?.flagsChanged ?? [],
        message: details?.message ?? null, at: performance.now() });
      for (const watcher of watchers) watcher();
    });
  }
  const domain = `rollgate-${++domains}`;
  await OpenFeature.setProviderAndWait(domain, provider);
  // The SDK announces READY once `initialize` resolves; recorded here with the version served,
  // as the Rust probe reports it.
  events.push({ event: ProviderEvents.Ready, version: provider.version ?? null, flagsChanged: [], message: null, at: performance.now() });
  const client = OpenFeature.getClient(domain);
  const getters = { boolean: "getBooleanDetails", string: "getStringDetails", number: "getNumberDetails", object: "getObjectDetails" };
  const defaults = { boolean: false, string: "", number: 0, object: {} };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await provider.onClose();
  };
  return {
    events,
    next: eventWaiter(events, watchers),
    evaluate: async (flag, type, context) => {
      const details = await client[getters[type]](flag, defaults[type], context);
      return details.errorCode
        ? { reason: "ERROR", errorCode: details.errorCode, errorMessage: details.errorMessage }
        : { value: details.value, variant: details.variant, reason: details.reason, metadata: details.flagMetadata };
    },
    track: async (flag, variant, metric, count) => client.track(metric, {}, { flag, variant, value: count }),
    flush: () => provider.flush(),
    stop: close,
    // An app that dies sends nothing more; in this process, that is closing without a flush.
    kill: close,
    exited: Promise.resolve(),
  };
}

/** A flag's answer over OFREP, in the shape the probes print: value, variant, reason, errorCode. */
export async function ofrepAnswer(base, token, flag, context) {
  const response = await fetch(`${base}/ofrep/v1/evaluate/flags/${encodeURIComponent(flag)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ context }),
  });
  const body = await response.json();
  return body.errorCode
    ? { reason: "ERROR", errorCode: body.errorCode }
    : { value: body.value, variant: body.variant, reason: body.reason };
}
