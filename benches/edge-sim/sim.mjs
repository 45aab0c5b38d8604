// Kill propagation across many edge locations: a Monte Carlo model of today's edge design (one
// Durable Object, every isolate asking it at most once a second) and of the fan-out design in
// docs/edge.md (a Durable Object per region, one refresh per location through the Cache API,
// isolates reading the location's cache). Every figure it assumes is in ASSUMPTIONS, with its
// source or marked as an assumption. Deterministic: the same seed prints the same table.
// Usage: node benches/edge-sim/sim.mjs [--trials 100] [--seed 1] [--sweep] [--push-scale 1]
//                                       [--look-ms 50]
//   --sweep adds faster refreshes at 300 locations, toward a 200 ms p99;
//   --push-scale multiplies every one-way latency from the control plane (0.5: a push path half
//   as long, say from control-plane replicas on several continents);
//   --look-ms sets how often an isolate looks at its location's cache.
// benches/edge-sim/miniflare-check.mjs sets the fan-out model beside the built design.

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(args[at + 1]);
};

export const ASSUMPTIONS = {
  // "Each individual Object is inherently single-threaded"; Cloudflare's FAQ puts one object's
  // throughput at about 1,000 requests per second (developers.cloudflare.com/durable-objects/
  // reference/faq/, "How much work can a single Durable Object do?"). The issue says the same.
  durableObjectCapacity: 1000,
  // Cloudflare names 9 location hints (developers.cloudflare.com/durable-objects/reference/
  // data-location/): wnam, enam, sam, weur, eeur, apac, oc, afr, me. The share of edge
  // locations in each is an assumption, roughly Cloudflare's published city map.
  regions: {
    enam: { share: 0.13, oneWayMs: 10 },
    wnam: { share: 0.10, oneWayMs: 35 },
    sam: { share: 0.09, oneWayMs: 70 },
    weur: { share: 0.22, oneWayMs: 45 },
    eeur: { share: 0.08, oneWayMs: 65 },
    me: { share: 0.06, oneWayMs: 90 },
    afr: { share: 0.07, oneWayMs: 110 },
    apac: { share: 0.20, oneWayMs: 100 },
    oc: { share: 0.05, oneWayMs: 120 },
  },
  // One-way latency from the control plane (assumed in enam) to a region: the values above,
  // each draw multiplied by 0.8–1.5 (assumption; the "100–300 ms of round trip" across
  // continents).
  jitter: [0.8, 1.5],
  // Round trip from a location to a Durable Object in its own region: 5–40 ms (assumption).
  inRegionRttMs: [5, 40],
  // A Durable Object's storage write, and a Cache API read or write in a location: a few ms
  // (assumption; the Cache API is local to each data center, developers.cloudflare.com/
  // workers/runtime-apis/cache/).
  storageWriteMs: 5,
  cacheMs: 1,
  // Installing a new envelope in an isolate (compile): 2 ms for a snapshot of about 100 flags
  // (assumption; benches/benches/compile.rs measures flag-core's compile).
  installMs: 2,
  // Isolates serving traffic per location, and requests per second each (assumption: a busy
  // site, 300 × 20 × 5 = 30,000 requests per second at 300 locations).
  isolatesPerLocation: 20,
  requestsPerIsolate: 5,
  // Today: an isolate asks the Durable Object at most once a second (docs/edge.md, Freshness).
  todayCheckSeconds: 1,
  // The fan-out design: a location refreshes from its regional object every 100 ms; an isolate
  // looks at its location's cache at most every 50 ms, on a request, before answering it. A
  // region's locations are spread over as many objects as keep each under 70% of its capacity.
  refreshMs: 100,
  isolateLookMs: 50,
  objectUtilisation: 0.7,
  // The envelope the control plane sends: 100 KB (assumption; a snapshot of about 100 flags
  // with segments and the reader digests).
  envelopeKb: 100,
};

/** mulberry32: a small seeded generator, so runs repeat. */
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uniform = (random, [low, high]) => low + (high - low) * random();
const pushScale = option("push-scale", 1);
ASSUMPTIONS.isolateLookMs = option("look-ms", ASSUMPTIONS.isolateLookMs);
/** A one-way latency from the control plane to `region`, in ms. */
const fromControlPlane = (random, region) => pushScale * uniform(random, ASSUMPTIONS.jitter) * ASSUMPTIONS.regions[region].oneWayMs;
const exponential = (random, rate) => -Math.log(1 - random()) / rate;

/** Locations spread over regions by their shares, largest remainder first. */
function placeLocations(count) {
  const entries = Object.entries(ASSUMPTIONS.regions);
  const exact = entries.map(([name, region]) => [name, region.share * count]);
  const counts = Object.fromEntries(exact.map(([name, n]) => [name, Math.floor(n)]));
  let left = count - Object.values(counts).reduce((a, b) => a + b, 0);
  for (const [name] of [...exact].sort((a, b) => (b[1] % 1) - (a[1] % 1))) {
    if (left-- <= 0) break;
    counts[name] += 1;
  }
  return Object.entries(counts).flatMap(([name, n]) => Array.from({ length: n }, () => name));
}

/** Waiting time in an M/M/1 queue at utilisation rho, in ms; Infinity at or over capacity. */
function queueing(random, arrivalsPerSecond) {
  const rho = arrivalsPerSecond / ASSUMPTIONS.durableObjectCapacity;
  if (rho >= 1) return Infinity;
  return random() < rho ? 1000 * exponential(random, ASSUMPTIONS.durableObjectCapacity - arrivalsPerSecond) : 0;
}

/** The first request of an isolate at or after `t` (ms), requests being Poisson. */
const nextRequest = (random, t) => t + 1000 * exponential(random, ASSUMPTIONS.requestsPerIsolate);
/** The first request anywhere in a location at or after `t`. */
const nextInLocation = (random, t) =>
  t + 1000 * exponential(random, ASSUMPTIONS.isolatesPerLocation * ASSUMPTIONS.requestsPerIsolate);

/** Today: one object near the control plane; each isolate checks it at most once a second. */
export function today(random, locations) {
  const a = ASSUMPTIONS;
  const isolates = locations.length * a.isolatesPerLocation;
  // Each isolate checks about every second plus the wait for its next request.
  const period = 1000 * a.todayCheckSeconds + 1000 / a.requestsPerIsolate;
  const objectLoad = isolates * (1000 / period);
  // The push lands in the location nearest the control plane and goes on to the object.
  const stored = fromControlPlane(random, "enam") + uniform(random, a.inRegionRttMs) / 2 + a.storageWriteMs;
  const times = [];
  for (const region of locations) {
    const rtt = 2 * uniform(random, a.jitter) * a.regions[region].oneWayMs + uniform(random, a.inRegionRttMs);
    for (let i = 0; i < a.isolatesPerLocation; i++) {
      // The last check began somewhere in the second before the kill.
      let check = nextRequest(random, -1000 * a.todayCheckSeconds * random() + 1000 * a.todayCheckSeconds);
      for (;;) {
        const wait = queueing(random, objectLoad);
        if (!Number.isFinite(wait)) { times.push(Infinity); break; }
        if (check + rtt / 2 + wait >= stored) { times.push(check + rtt + wait + a.installMs); break; }
        check = nextRequest(random, check + 1000 * a.todayCheckSeconds);
      }
    }
  }
  return { times, objectLoads: [objectLoad], egressKb: a.envelopeKb, objects: 1 };
}

/** The fan-out design: an object per region, a refresh per location, isolates read the cache. */
export function fanOut(random, locations, refreshMs = ASSUMPTIONS.refreshMs) {
  const a = ASSUMPTIONS;
  // One push to the nearest location, whose Worker writes every regional object.
  const nearest = fromControlPlane(random, "enam");
  const stored = Object.fromEntries(Object.keys(a.regions).map((name) =>
    [name, nearest + fromControlPlane(random, name) + a.storageWriteMs]));
  const perRegion = {};
  for (const region of locations) perRegion[region] = (perRegion[region] ?? 0) + 1;
  const shards = Object.fromEntries(Object.entries(perRegion).map(([name, n]) =>
    [name, Math.max(1, Math.ceil((n * 1000) / refreshMs / (a.objectUtilisation * a.durableObjectCapacity)))]));
  const loads = Object.fromEntries(Object.entries(perRegion).map(([name, n]) => [name, (n * 1000) / refreshMs / shards[name]]));
  const times = [];
  for (const region of locations) {
    const rtt = uniform(random, a.inRegionRttMs);
    // A refresh is claimed by the location's first request once its copy is refreshMs old, so
    // refreshes come every refreshMs plus the wait for that request, at a phase of their own.
    let refresh = -refreshMs * random();
    let updated;
    for (;;) {
      const wait = queueing(random, loads[region]);
      if (!Number.isFinite(wait)) { updated = Infinity; break; }
      if (refresh + rtt / 2 + wait >= stored[region]) { updated = refresh + rtt + wait + a.cacheMs; break; }
      refresh = nextInLocation(random, refresh + refreshMs);
    }
    for (let i = 0; i < a.isolatesPerLocation; i++) {
      if (!Number.isFinite(updated)) { times.push(Infinity); continue; }
      // The isolate's looks: at most every isolateLookMs, each on its first request after. The
      // look is on the request's path, so from the moment a look is allowed after the update,
      // every request is answered with the kill.
      let previous = -a.isolateLookMs * random();
      for (let look = nextRequest(random, previous + a.isolateLookMs); look < updated; look = nextRequest(random, look + a.isolateLookMs)) {
        previous = look;
      }
      times.push(Math.max(updated, previous + a.isolateLookMs) + a.cacheMs + a.installMs);
    }
  }
  const objects = Object.values(shards).reduce((x, y) => x + y, 0);
  return { times, objectLoads: Object.values(loads), egressKb: a.envelopeKb, objects };
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const ms = (value) => (Number.isFinite(value) ? `${Math.round(value)}` : "∞ (overloaded)");

/** Runs `design` over `trials` kills at each location count. */
export function simulate(design, locationCounts, { trials, seed, refreshMs }) {
  return locationCounts.map((count) => {
    const random = generator(seed + count);
    const locations = placeLocations(count);
    const all = [];
    const last = [];
    let maxLoad = 0;
    let egress = 0;
    let objectCount = 0;
    for (let t = 0; t < trials; t++) {
      const { times, objectLoads, egressKb, objects } = design(random, locations, refreshMs);
      all.push(...times);
      last.push(Math.max(...times));
      maxLoad = Math.max(maxLoad, ...objectLoads);
      egress = egressKb;
      objectCount = objects;
    }
    all.sort((x, y) => x - y);
    last.sort((x, y) => x - y);
    return {
      locations: count,
      p50: quantile(all, 0.5), p99: quantile(all, 0.99), p999: quantile(all, 0.999),
      lastP50: quantile(last, 0.5), lastP99: quantile(last, 0.99),
      objectLoad: maxLoad, egressKb: egress, objects: objectCount,
    };
  });
}

function table(title, rows) {
  const lines = [
    `${title}`,
    "",
    "| locations | isolate p50 | p99 | p99.9 | last isolate, median | last isolate, p99 | Durable Objects | requests/s at the busiest (capacity 1,000) | control-plane egress per change |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.locations} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ${ms(r.lastP50)} | ${ms(r.lastP99)} | ${r.objects} | ${Math.round(r.objectLoad)} | ${r.egressKb} KB |`),
  ];
  return lines.join("\n");
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop())) {
  const trials = option("trials", 100);
  const seed = option("seed", 1);
  const counts = [1, 10, 100, 300];
  console.log(`Kill propagation in ms, from the commit until an isolate answers every request with the kill; ${trials} kills per row, seed ${seed}.`);
  console.log(`${ASSUMPTIONS.isolatesPerLocation} isolates per location at ${ASSUMPTIONS.requestsPerIsolate} requests/s each; push latency × ${pushScale}.\n`);
  console.log(table("Today: one Durable Object, each isolate checks it at most once a second", simulate(today, counts, { trials, seed })));
  console.log("");
  console.log(table(`Fan-out: a Durable Object per region, a refresh per location every ${ASSUMPTIONS.refreshMs} ms through the Cache API`,
    simulate(fanOut, counts, { trials, seed })));
  if (args.includes("--sweep")) {
    for (const refreshMs of [50, 25, 10]) {
      console.log("");
      console.log(table(`Fan-out, refreshing every ${refreshMs} ms`, simulate(fanOut, [300], { trials, seed, refreshMs })));
    }
  }
}
