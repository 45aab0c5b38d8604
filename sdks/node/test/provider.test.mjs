// The provider through OpenFeature's server SDK against a scripted control plane on loopback:
// what it serves before, during and after sync, the events it sends, and the counts it
// reports. The real control plane is driven in tests/e2e/providers.test.mjs.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { OpenFeature, ProviderEvents } from "@openfeature/server-sdk";

import { RollgateProvider } from "../src/index.js";
import { Backoff, changedFlags, digest } from "../src/sync.js";
import { Counts } from "../src/metrics.js";

function snapshot(version, bannerPercent) {
  return {
    schema: 1, environment: "production", version,
    segments: [{ key: "staff", included: ["ana"] }],
    flags: [
      { key: "banner", type: "string", variants: { old: "Welcome", new: "Hello!" }, off_variant: "old",
        rules: [{ segments: ["staff"], serve: { variant: "new" } }],
        fallthrough: { rollout: { percent: bannerPercent, inside: "new", outside: "old" } } },
      { key: "limit", type: "number", variants: { low: 10 }, off_variant: "low", fallthrough: { variant: "low" } },
      { key: "theme", type: "object", variants: { plain: { color: "gray" } }, off_variant: "plain", fallthrough: { variant: "plain" } },
      { key: "dark", type: "boolean", variants: { on: true, off: false }, off_variant: "off",
        prerequisites: [{ flag: "banner", variant: "new" }], fallthrough: { variant: "on" } },
    ],
  };
}

/** A control plane that streams what the test sends, serves a snapshot (or 503) and records metric batches. */
async function scripted() {
  const state = { streams: new Set(), snapshot: null, batches: [], refuseMetrics: 0, lastEventIds: [], streamMissing: false };
  const server = createServer((request, response) => {
    const path = new URL(request.url, "http://x").pathname;
    if (path.endsWith("/stream")) {
      if (state.streamMissing) return response.writeHead(404).end();
      state.lastEventIds.push(request.headers["last-event-id"] ?? null);
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(": hello\n\n");
      state.streams.add(response);
      response.on("close", () => state.streams.delete(response));
    } else if (path.endsWith("/snapshot")) {
      if (!state.snapshot) return response.writeHead(503).end();
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(state.snapshot));
    } else if (path.endsWith("/metrics") && request.method === "POST") {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        state.batches.push(JSON.parse(body));
        if (state.refuseMetrics > 0) {
          state.refuseMetrics -= 1;
          return response.writeHead(503).end();
        }
        response.writeHead(202).end('{"counted":true}');
      });
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const send = (data) => { for (const stream of state.streams) stream.write(`event: snapshot\ndata: ${data}\n\n`); };
  const closeStreams = () => { for (const stream of state.streams) stream.end(); };
  const until = async (check) => { while (!check()) await new Promise((resolve) => setTimeout(resolve, 5)); };
  return { state, send, closeStreams, until, url: `http://127.0.0.1:${server.address().port}`, close: () => { closeStreams(); server.close(); } };
}

/** Events of the provider, as they come; `next(kind)` waits for the next unseen one of that kind. */
function recorder(provider) {
  const seen = [];
  let read = 0;
  const listeners = new Set();
  for (const kind of [ProviderEvents.Ready, ProviderEvents.ConfigurationChanged, ProviderEvents.Stale, ProviderEvents.Error]) {
    provider.events.addHandler(kind, (details) => {
      seen.push({ kind, ...details });
      for (const listener of listeners) listener();
    });
  }
  const next = () => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no event within 10 s; seen ${JSON.stringify(seen)}`)), 10000);
    const check = () => {
      if (read < seen.length) {
        listeners.delete(check);
        clearTimeout(timer);
        resolve(seen[read++]);
      }
    };
    listeners.add(check);
    check();
  });
  return { seen, next };
}

const user = (targetingKey) => ({ targetingKey });

test("before any snapshot every answer is PROVIDER_NOT_READY", async () => {
  const provider = new RollgateProvider({ url: "http://127.0.0.1:9", token: "t", environment: "production", initializeTimeoutMs: 200 });
  await OpenFeature.setProviderAndWait("not-ready", provider).catch(() => {});
  const details = await OpenFeature.getClient("not-ready").getBooleanDetails("dark", true, user("ana"));
  assert.deepEqual([details.value, details.errorCode], [true, "PROVIDER_NOT_READY"]);
  await OpenFeature.clearProviders();
});

test("a bootstrap file is served before the control plane answers; a bad one is refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rollgate-node-"));
  const path = join(dir, "flags.json");
  writeFileSync(path, JSON.stringify(snapshot(7, 100000)));
  const provider = new RollgateProvider({ url: "http://127.0.0.1:9", token: "t", environment: "production", bootstrap: path, metricsIntervalMs: null });
  await OpenFeature.setProviderAndWait("bootstrap", provider);
  const details = await OpenFeature.getClient("bootstrap").getStringDetails("banner", "default", user("bob"));
  assert.deepEqual([details.value, details.reason, provider.version], ["Hello!", "SPLIT", 7]);
  writeFileSync(path, '{"schema": 1, "flags": [');
  assert.throws(() => new RollgateProvider({ url: "http://x", token: "t", environment: "production", bootstrap: path }), /is invalid/);
  await OpenFeature.clearProviders();
});

test("answers map to OpenFeature exactly", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rollgate-node-"));
  const path = join(dir, "flags.json");
  writeFileSync(path, JSON.stringify(snapshot(1, 0)));
  const provider = new RollgateProvider({ url: "http://127.0.0.1:9", token: "t", environment: "production", bootstrap: path, metricsIntervalMs: null });
  await OpenFeature.setProviderAndWait("answers", provider);
  const client = OpenFeature.getClient("answers");
  const staff = await client.getStringDetails("banner", "x", user("ana"));
  assert.deepEqual([staff.value, staff.variant, staff.reason, staff.flagMetadata], ["Hello!", "new", "TARGETING_MATCH", { ruleIndex: 0 }]);
  const failed = await client.getBooleanDetails("dark", true, user("bob"));
  assert.deepEqual([failed.value, failed.reason, failed.flagMetadata], [false, "DEFAULT", { prerequisiteFailed: true }]);
  assert.equal((await client.getNumberDetails("limit", 0, user("bob"))).value, 10);
  assert.deepEqual((await client.getObjectDetails("theme", {}, user("bob"))).value, { color: "gray" });
  const mismatch = await client.getBooleanDetails("banner", true, user("bob"));
  assert.deepEqual([mismatch.value, mismatch.errorCode], [true, "TYPE_MISMATCH"]);
  assert.equal((await client.getStringDetails("nope", "d", user("bob"))).errorCode, "FLAG_NOT_FOUND");
  assert.equal((await client.getStringDetails("banner", "d", {})).errorCode, "TARGETING_KEY_MISSING");
  await OpenFeature.clearProviders();
});

test("it follows the stream, keeps the last good snapshot, and reports each change", async () => {
  const server = await scripted();
  const provider = new RollgateProvider({ url: server.url, token: "t", environment: "production", metricsIntervalMs: null });
  const events = recorder(provider);
  try {
    const initialized = OpenFeature.setProviderAndWait("stream", provider);
    await server.until(() => server.state.streams.size === 1);
    server.send(JSON.stringify(snapshot(1, 0)));
    await initialized;
    const client = OpenFeature.getClient("stream");
    assert.equal(await client.getStringValue("banner", "x", user("bob")), "Welcome");

    const broken = snapshot(2, 100000);
    broken.flags[0].fallthrough.rollout.inside = "missing";
    server.send(JSON.stringify(broken));
    const error = await events.next();
    assert.equal(error.kind, ProviderEvents.Error);
    assert.match(error.message, /unknown variant/);
    assert.equal(await client.getStringValue("banner", "x", user("bob")), "Welcome", "the last good snapshot");
    server.send("{not json");
    assert.equal((await events.next()).kind, ProviderEvents.Error, "each refusal is reported");

    server.send(JSON.stringify(snapshot(3, 100000)));
    const ready = await events.next();
    assert.deepEqual([ready.kind, ready.metadata.version], [ProviderEvents.Ready, 3]);
    const changed = await events.next();
    assert.deepEqual([changed.kind, changed.flagsChanged], [ProviderEvents.ConfigurationChanged, ["banner", "dark"]]);
    assert.equal(await client.getStringValue("banner", "x", user("bob")), "Hello!");
    server.send(JSON.stringify(snapshot(2, 0)));
    server.send(JSON.stringify(snapshot(4, 100000)));
    assert.equal((await events.next()).metadata.version, 4, "version 2 was passed over");
  } finally {
    await OpenFeature.clearProviders();
    server.close();
  }
});

test("a lost control plane makes it STALE, and it resumes where it was", async () => {
  const server = await scripted();
  const provider = new RollgateProvider({ url: server.url, token: "t", environment: "production", metricsIntervalMs: null, maxBackoffMs: 500 });
  const events = recorder(provider);
  try {
    const initialized = OpenFeature.setProviderAndWait("stale", provider);
    await server.until(() => server.state.streams.size === 1);
    server.send(JSON.stringify(snapshot(5, 0)));
    await initialized;
    server.closeStreams();
    const stale = await events.next();
    assert.equal(stale.kind, ProviderEvents.Stale);
    assert.match(stale.message, /503/);
    assert.equal(await OpenFeature.getClient("stale").getStringValue("banner", "x", user("bob")), "Welcome");
    const ready = await events.next();
    assert.deepEqual([ready.kind, ready.metadata.version], [ProviderEvents.Ready, 5]);
    assert.deepEqual(server.state.lastEventIds, [null, "5"]);
    server.send(JSON.stringify(snapshot(6, 100000)));
    assert.equal((await events.next()).kind, ProviderEvents.ConfigurationChanged);
  } finally {
    await OpenFeature.clearProviders();
    server.close();
  }
});

test("without the stream it polls the snapshot", async () => {
  const server = await scripted();
  server.state.streamMissing = true;
  server.state.snapshot = snapshot(9, 100000);
  const provider = new RollgateProvider({ url: server.url, token: "t", environment: "production", metricsIntervalMs: null });
  try {
    await OpenFeature.setProviderAndWait("poll", provider);
    assert.equal(provider.version, 9);
    assert.equal(await OpenFeature.getClient("poll").getStringValue("banner", "x", user("bob")), "Hello!");
  } finally {
    await OpenFeature.clearProviders();
    server.close();
  }
});

test("served variants and tracked metrics are reported in batches, sent again until counted", async () => {
  const server = await scripted();
  server.state.snapshot = snapshot(1, 0);
  server.state.streamMissing = true;
  const provider = new RollgateProvider({ url: server.url, token: "t", environment: "production", metricsIntervalMs: 3600000 });
  try {
    await OpenFeature.setProviderAndWait("metrics", provider);
    const client = OpenFeature.getClient("metrics");
    for (const key of ["ana", "bob", "cy"]) await client.getStringValue("banner", "x", user(key));
    client.track("errors", user("bob"), { flag: "banner", variant: "old", value: 2 });
    client.track("errors", user("bob"), { value: 2 }); // no flag or variant: not counted
    server.state.refuseMetrics = 1;
    await provider.flush();
    await provider.flush();
    const [refused, counted] = server.state.batches;
    assert.deepEqual(refused, counted, "the same batch, with the same id, is sent again");
    assert.deepEqual(counted.counters.sort((a, b) => a.variant.localeCompare(b.variant)), [
      { flag: "banner", variant: "new", counts: { evaluations: 1 } },
      // Ana is staff, served by a rule; the rollout (at 0%) decided for bob and cy.
      { flag: "banner", variant: "old", counts: { evaluations: 2, rollout_evaluations: 2, errors: 2 } },
    ]);
    await provider.flush();
    assert.equal(server.state.batches.length, 2, "nothing more to report");
  } finally {
    await OpenFeature.clearProviders();
    server.close();
  }
});

test("changes reach the flags that follow them; backoff doubles with jitter; big counts split", () => {
  const flag = (key, extra = {}) => ({ key, type: "boolean", variants: { on: true, off: false }, off_variant: "off", fallthrough: { variant: "off" }, ...extra });
  const old = { segments: [{ key: "staff", included: ["a"] }], flags: [flag("a"), flag("b", { rules: [{ segments: ["staff"], serve: { variant: "on" } }] }),
    flag("c", { prerequisites: [{ flag: "b", variant: "on" }] }), flag("d"), flag("gone")] };
  const now = { segments: [{ key: "staff", included: ["a", "b"] }], flags: [flag("a"), flag("b", { rules: [{ segments: ["staff"], serve: { variant: "on" } }] }),
    flag("c", { prerequisites: [{ flag: "b", variant: "on" }] }), flag("d", { enabled: false }), flag("new")] };
  assert.deepEqual(changedFlags(digest(old), digest(now)), ["b", "c", "d", "gone", "new"]);
  assert.deepEqual(changedFlags(digest(now), digest(now)), []);

  const backoff = new Backoff(2000);
  for (const ceiling of [250, 500, 1000, 2000, 2000]) {
    const wait = backoff.next();
    assert.ok(wait >= ceiling / 2 && wait <= ceiling, `${wait} within ${ceiling}`);
  }

  const counts = new Counts();
  counts.add("f", "v", "evaluations", 1_000_000_005);
  assert.equal(counts.take()[0].counts.evaluations, 1_000_000_000);
  assert.equal(counts.take()[0].counts.evaluations, 5);
  for (let i = 0; i < 1001; i++) counts.add(`flag-${i}`, "v", "evaluations", 1);
  assert.equal(counts.take().length, 1000);
  assert.equal(counts.take().length, 1);
});

test("options: undefined takes the default, a bad time throws; the event parser takes any line end", async () => {
  const base = { url: "http://127.0.0.1:9", token: "t", environment: "production" };
  assert.doesNotThrow(() => new RollgateProvider({ ...base, maxBackoffMs: undefined, metricsIntervalMs: null }));
  for (const bad of [{ maxBackoffMs: 0 }, { streamIdleTimeoutMs: "45s" }, { metricsIntervalMs: NaN }]) {
    assert.throws(() => new RollgateProvider({ ...base, ...bad }), /positive number of milliseconds/, JSON.stringify(bad));
  }
  const { serverSentEvents } = await import("../src/sync.js");
  const chunks = ["id: 1\r", "\nevent: snapshot\r\ndata: {\"a\":", "1}\r\n\r", "\n: keep-alive\n\nid: 2\ndata: x\n\n"];
  const events = [];
  for await (const event of serverSentEvents(chunks.map((c) => new TextEncoder().encode(c)), () => {})) events.push(event);
  assert.deepEqual(events, [{ id: "1", event: "snapshot", data: '{"a":1}' }, { id: "2", event: "message", data: "x" }]);
});

test("what the API would refuse is not tracked, and another environment's snapshot is refused", async () => {
  const server = await scripted();
  server.state.snapshot = snapshot(1, 0);
  server.state.streamMissing = true;
  const warnings = [];
  const provider = new RollgateProvider({ url: server.url, token: "t", environment: "production", metricsIntervalMs: 3600000,
    logger: { warn: (message) => warnings.push(message) } });
  const events = recorder(provider);
  try {
    await OpenFeature.setProviderAndWait("refusals", provider);
    const client = OpenFeature.getClient("refusals");
    for (const details of [{ flag: "banner", variant: "old", value: 1.5 }, { flag: "banner", variant: "old", value: "5" },
      { flag: "nope", variant: "old" }, { flag: "banner", variant: "old", value: Infinity }]) {
      client.track("errors", {}, details);
    }
    client.track("checkoutCompleted", {}, { flag: "banner", variant: "old" });
    await provider.flush();
    assert.deepEqual(server.state.batches, [], "nothing was counted");
    assert.equal(warnings.length, 5);

    const elsewhere = snapshot(2, 100000);
    elsewhere.environment = "staging";
    server.state.snapshot = elsewhere;
    server.state.streamMissing = false;
    await server.until(() => server.state.streams.size === 1);
    server.send(JSON.stringify(elsewhere));
    const error = await events.next();
    assert.equal(error.kind, ProviderEvents.Error);
    assert.match(error.message, /not of `production`/);
    assert.equal(provider.version, 1);
  } finally {
    await OpenFeature.clearProviders();
    server.close();
  }
});
