// Checks the simulator against the fan-out design as built, at the scale Miniflare runs: LOCATIONS
// locations (default 6) in two regions (weur, apac), each a Worker with its own isolate and
// cache partition, sharing the regional Durable Objects (edge-worker/js/edge.mjs,
// startLocations). Each location gets Poisson traffic (RATE requests/s, default 20); KILLS
// pushes (default 100) alternate a kill and its undoing, each sent to the first location as the
// control plane would. For every push and location: the time from sending it until the first
// request sent after it that is answered with it. Then the simulator's fan-out model with the
// same shape (one isolate per location, the same rate, Miniflare's near-zero latencies, each
// figure below) over the same number of kills, side by side.
// Usage: node benches/edge-sim/miniflare-check.mjs   (after edge-worker/build)
import { createHash, createHmac } from "node:crypto";
import { setTimeout as pause } from "node:timers/promises";

import { startLocations } from "../../edge-worker/js/edge.mjs";
import { ASSUMPTIONS, fanOut, simulate } from "./sim.mjs";

const locationCount = Number(process.env.LOCATIONS ?? 6);
const rate = Number(process.env.RATE ?? 20);
const kills = Number(process.env.KILLS ?? 100);
const SECRET = "push-secret-for-the-simulator-check";
const READER = "rg_simulator_check_reader_token";

const names = Array.from({ length: locationCount }, (_, i) => ({ name: `location-${i}`, region: i % 2 === 0 ? "weur" : "apac" }));
const edge = await startLocations({ regions: ["weur", "apac"], locations: names, bindings: { PUSH_SECRET: SECRET } });

function envelope(version) {
  return JSON.stringify({
    environment: "production", version, readers_revision: 1,
    readers: [createHash("sha256").update(READER).digest("hex")],
    snapshot: { schema: 1, environment: "production", version, flags: [
      { key: "checkout-v2", type: "boolean", variants: { on: true, off: false }, off_variant: "off",
        enabled: version % 2 === 1, fallthrough: { variant: "on" } },
    ] },
  });
}

async function push(version) {
  const body = envelope(version);
  const signature = `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`;
  const response = await fetch(`${edge.urls["location-0"]}/rollgate/v1/push`, {
    method: "POST", headers: { "x-rollgate-signature": signature, "content-type": "application/json" }, body,
  });
  if (response.status !== 200) throw new Error(`push ${version}: ${response.status} ${await response.text()}`);
}

// Each location's traffic: the send time and the variant answered, for every request.
const answers = Object.fromEntries(names.map(({ name }) => [name, []]));
let running = true;
async function traffic(name) {
  while (running) {
    const sentAt = performance.now();
    const response = await fetch(`${edge.urls[name]}/ofrep/v1/evaluate/flags/checkout-v2`, {
      method: "POST", headers: { "x-api-key": READER, "content-type": "application/json" }, body: "{}",
    });
    answers[name].push({ sentAt, variant: (await response.json()).variant });
    // Poisson arrivals: exponential gaps between requests (the load generator's pacing).
    await pause((-Math.log(1 - Math.random()) / rate) * 1000);
  }
}

await push(1);
const drivers = names.map(({ name }) => traffic(name));
const measured = [];
const lastPerKill = [];
for (let version = 2; version < 2 + kills; version++) {
  await pause(400 + Math.random() * 200); // lets every location settle between pushes
  const sentAt = performance.now();
  await push(version);
  const expected = version % 2 === 1 ? "on" : "off";
  const times = [];
  for (const { name } of names) {
    // The first request sent after the push that was answered with it.
    for (;;) {
      const seen = answers[name].find((answer) => answer.sentAt >= sentAt && answer.variant === expected);
      if (seen) { times.push(seen.sentAt - sentAt); break; }
      if (performance.now() - sentAt > 10000) throw new Error(`${name} did not serve version ${version} within 10 s`);
      await pause(20);
    }
  }
  measured.push(...times);
  lastPerKill.push(Math.max(...times));
}
running = false;
await Promise.all(drivers);
await edge.dispose();

// The simulator, shaped like this run: two regions of equal share, Miniflare's latencies.
Object.assign(ASSUMPTIONS, {
  regions: { enam: { share: 0, oneWayMs: 1 }, weur: { share: 0.5, oneWayMs: 2 }, apac: { share: 0.5, oneWayMs: 2 } },
  jitter: [0.5, 1.5], inRegionRttMs: [1, 4], storageWriteMs: 2, cacheMs: 1, installMs: 1,
  isolatesPerLocation: 1, requestsPerIsolate: rate,
});
const [modelled] = simulate(fanOut, [locationCount], { trials: kills, seed: 1 });

const sorted = (values) => [...values].sort((a, b) => a - b);
const quantile = (values, q) => sorted(values)[Math.min(values.length - 1, Math.floor(q * values.length))];
const row = (name, p50, p99, last50, last99) => `| ${name} | ${Math.round(p50)} | ${Math.round(p99)} | ${Math.round(last50)} | ${Math.round(last99)} |`;
console.log(`${locationCount} locations in 2 regions, one isolate each at ${rate} requests/s; ${kills} pushes (ms)\n`);
console.log("| | location p50 | p99 | last location, median | last location, p99 |");
console.log("|---|---|---|---|---|");
console.log(row("Miniflare, measured", quantile(measured, 0.5), quantile(measured, 0.99), quantile(lastPerKill, 0.5), quantile(lastPerKill, 0.99)));
console.log(row("simulator, fan-out", modelled.p50, modelled.p99, modelled.lastP50, modelled.lastP99));
