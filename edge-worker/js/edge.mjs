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
  const dir = builtWorker();
  const miniflare = new Miniflare({
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
    durableObjects: { EDGE_CONFIG: "EdgeConfig" },
    durableObjectsPersist: persist ?? false,
    host: "127.0.0.1",
    port,
    // ROLLGATE_EDGE_LOG=debug shows the worker's console output and Miniflare's own.
    log: new Log(LogLevel[(process.env.ROLLGATE_EDGE_LOG ?? "warn").toUpperCase()] ?? LogLevel.WARN),
  });
  const url = (await miniflare.ready).toString().replace(/\/$/, "");
  return { url, miniflare, dispose: () => miniflare.dispose() };
}
