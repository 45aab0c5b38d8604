// Drives the in-process providers as an app would, through OpenFeature: the Rust provider in
// its probe program (sdks/rust/examples/probe.rs), which answers JSON lines on stdout.
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
  /** The first event of `kind` from index `after` on (and satisfying `test`), within `ms`. */
  const next = (kind, { after = 0, test = () => true, ms = 10000 } = {}) => new Promise((resolve, reject) => {
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
  await Promise.race([ready, exited.then((code) => { throw new Error(`the probe exited with ${code}`); })]);
  return {
    events,
    next,
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
