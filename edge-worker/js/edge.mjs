// Starts the built edge worker in Miniflare (workerd) on a loopback port. Used by the tests,
// the benchmarks and the local run (`node js/serve.mjs`).
import { Log, LogLevel, Miniflare } from "miniflare";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");

/** Where edge-worker/build put the worker. */
export function builtWorker() {
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  return join(target, "edge-worker");
}

/**
 * Starts an edge. `persist` is a directory for the Durable Object's storage (omit for memory).
 * `bindings` override ENVIRONMENT, PUSH_SECRET, CONTROL_PLANE_URL, CONTROL_PLANE_TOKEN and
 * PULL_INTERVAL_SECONDS. Returns { url, miniflare, dispose }.
 */
export async function startEdge({ bindings = {}, persist, port = 0 } = {}) {
  const miniflare = new Miniflare({
    ...worker(bindings),
    durableObjects: { EDGE_CONFIG: "EdgeConfig" },
    durableObjectsPersist: persist ?? false,
    host: "127.0.0.1",
    port,
    log: log(),
  });
  const url = (await miniflare.ready).toString().replace(/\/$/, "");
  return { url, miniflare, dispose: () => miniflare.dispose() };
}

/**
 * Starts an edge spread over locations, in one Miniflare: each location is a Worker of its own
 * (its own isolate, its own `LOCATION` in the Cache API's keys, its own loopback port), reading
 * the regional object `region` names; the regional objects (`REGIONS`) are shared by all, as on
 * Cloudflare. `locations` is [{ name, region }]. Returns { urls: {name: url}, miniflare, dispose }.
 */
export async function startLocations({ locations, regions, bindings = {} }) {
  const shared = { REGIONS: regions.join(","), ...bindings };
  const workers = locations.map(({ name, region }, index) => ({
    name,
    ...worker({ ...shared, LOCATION: name, REGION: region }),
    // The objects live in the first location's Worker; every location reaches the same ones.
    durableObjects: { EDGE_CONFIG: index === 0 ? "EdgeConfig" : { className: "EdgeConfig", scriptName: locations[0].name } },
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
  }));
  // No request.cf from Cloudflare's API (a shared option when there are several Workers).
  const miniflare = new Miniflare({ workers, cf: false, log: log() });
  await miniflare.ready;
  const urls = {};
  for (const { name } of locations) {
    urls[name] = (await miniflare.unsafeGetDirectURL(name)).toString().replace(/\/$/, "");
  }
  return { urls, miniflare, dispose: () => miniflare.dispose() };
}

/** The built Worker's modules and bindings. */
function worker(bindings) {
  const dir = builtWorker();
  return {
    modules: true,
    scriptPath: join(dir, "worker.js"),
    modulesRoot: dir,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2025-09-01",
    // No request.cf from Cloudflare's API: there is no internet here, nor a need for it.
    cf: false,
    bindings: { ENVIRONMENT: "production", PULL_INTERVAL_SECONDS: "60", ...bindings },
  };
}

/** ROLLGATE_EDGE_LOG=debug shows the worker's console output and Miniflare's own. */
function log() {
  return new Log(LogLevel[(process.env.ROLLGATE_EDGE_LOG ?? "warn").toUpperCase()] ?? LogLevel.WARN);
}
