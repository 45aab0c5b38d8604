// The whole system on loopback: `rollgate serve` on a SQLite file and the edge worker in
// Miniflare, registered with each other, with the demo flag and a read token for apps.
// `startStack()` is what the end-to-end tests use; run directly (tests/run-local), it stays up
// and prints a tour.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { startEdge } from "../edge-worker/js/edge.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** A port nobody listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves when `check()` returns truthy; polls every 20 ms for at most `ms`. */
export async function until(check, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Follows an environment's snapshot stream on `base` with `token`: `versions` as they arrive,
 * `at` when the latest did, `ended` once the stream is over (with `error` if it failed).
 * `controller.abort()` closes it.
 */
export function followStream(base, token, environment = "production") {
  const stream = { versions: [], at: 0, ended: false, error: null, controller: new AbortController() };
  (async () => {
    const response = await fetch(`${base}/api/v1/environments/${environment}/stream`, {
      headers: { authorization: `Bearer ${token}` },
      signal: stream.controller.signal,
    });
    if (response.status !== 200) throw new Error(`the stream answered ${response.status}`);
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line.startsWith("id: ")) {
          stream.versions.push(Number(line.slice(4)));
          stream.at = performance.now();
        }
      }
    }
  })().catch((error) => {
    if (error.name !== "AbortError") stream.error = error;
  }).finally(() => {
    stream.ended = true;
  });
  return stream;
}

/**
 * Starts one `rollgate serve` on `db` (a SQLite file or a postgres:// URL) and waits until it
 * is ready. Options: `port` (default: a free one), `demo` (create the demo flag), `adminToken`
 * and `pushSecret` (replicas of one control plane share both).
 * Returns { url, kill(signal), exited }: `exited` resolves when the process has ended.
 */
export async function startControlPlane({ db, port, demo = false, adminToken, pushSecret }) {
  port = port ?? (await freePort());
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  const child = spawn(
    join(target, "release", "rollgate"),
    // The edge and the tests' webhook receivers listen on loopback, a private target.
    ["serve", ...(demo ? ["--demo"] : []), "--db", db, "--listen", `127.0.0.1:${port}`,
      "--allow-targets", "127.0.0.0/8,::1/128"],
    {
      env: { ...process.env, ROLLGATE_ADMIN_TOKEN: adminToken, ROLLGATE_PUSH_SECRET: pushSecret, RUST_LOG: process.env.RUST_LOG ?? "warn" },
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  // However this process ends (Miniflare, for one, exits on SIGTERM by itself), the control
  // plane does not outlive it.
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  await until(async () => (await fetch(`${url}/readyz`)).ok, 15000, "the control plane");
  const kill = async (signal = "SIGTERM") => {
    child.kill(signal);
    await exited;
  };
  return { url, kill, exited };
}

/**
 * Starts the control plane and one production edge. Options: `db` (default: a new temporary
 * SQLite file; a postgres:// URL works too), `controlPort`, `edgePort`, `persist` (the edge's
 * Durable Object folder), and `secrets` ({adminToken, pushSecret, appToken, pullToken}) from an
 * earlier start on the same `db`.
 * Returns { controlPlane, edge, secrets, api, stop, ... }.
 */
export async function startStack({ db, controlPort, edgePort = 0, persist, secrets = {}, edgeBindings = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "rollgate-stack-"));
  const adminToken = secrets.adminToken ?? `rg_admin_${randomBytes(16).toString("hex")}`;
  const pushSecret = secrets.pushSecret ?? randomBytes(24).toString("hex");
  const server = await startControlPlane({ db: db ?? join(dir, "rollgate.db"), port: controlPort, demo: true, adminToken, pushSecret });
  const controlPlane = server.url;

  const api = async (method, path, body, token = adminToken) => {
    const response = await fetch(`${controlPlane}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };

  const token = async (name) =>
    (await api("POST", "/api/v1/tokens", { name: `${name}-${randomBytes(4).toString("hex")}`, scope: "read", environment: "production" })).body.token;
  const pullToken = secrets.pullToken ?? (await token("edge-pull"));
  const edgeOptions = {
    bindings: {
      ENVIRONMENT: "production",
      PUSH_SECRET: pushSecret,
      CONTROL_PLANE_URL: controlPlane,
      CONTROL_PLANE_TOKEN: pullToken,
      ...edgeBindings,
    },
  };
  const edge = await startEdge({ port: edgePort, persist, ...edgeOptions });
  const appToken = secrets.appToken ?? (await token("demo-app"));
  const registered = await api("POST", "/api/v1/edges", { name: `edge-${new URL(edge.url).port}`, url: edge.url, environment: "production" });
  // 409: registered by an earlier start on the same database and port.
  if (![201, 409].includes(registered.status)) throw new Error(`registering the edge: ${JSON.stringify(registered.body)}`);
  // The edge has the current configuration, with the app token among its readers.
  await until(async () => {
    const edges = (await api("GET", "/api/v1/edges")).body;
    return edges.every((e) => e.lag === 0 && e.last_error === null);
  }, 15000, "the edge to apply the configuration");

  let currentEdge = edge;
  // The control plane goes down even if disposing of the edge fails (Miniflare may already
  // have shut down on the same signal).
  const stop = async () => {
    try {
      await currentEdge.dispose();
    } finally {
      await server.kill("SIGTERM");
    }
  };
  // For failure tests: the control plane dies at once, as in a crash.
  const killControlPlane = () => server.kill("SIGKILL");
  // For durability tests: a new edge process on the same Durable Object state and port.
  const restartEdge = async () => {
    await currentEdge.dispose();
    currentEdge = await startEdge({ port: Number(new URL(edge.url).port), persist, bindings: edgeOptions.bindings });
  };
  return {
    killControlPlane,
    restartEdge, controlPlane, edge: edge.url, adminToken, appToken, secrets: { adminToken, pushSecret, appToken, pullToken }, api, stop };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.env.STACK_JSON) {
  // For test harnesses in other languages: a private stack with the end-to-end flags,
  // described on one line of JSON; it runs until stdin closes.
  const { createFlags } = await import("./e2e/fixtures.mjs");
  const stack = await startStack();
  await createFlags(stack.api);
  await until(async () => (await stack.api("GET", "/api/v1/edges")).body.every((e) => e.lag === 0), 10000, "the edge");
  const { controlPlane, edge, appToken, adminToken } = stack;
  console.log(JSON.stringify({ controlPlane, edge, appToken, adminToken }));
  process.stdin.resume();
  process.stdin.on("end", async () => {
    await stack.stop();
    process.exit(0);
  });
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // The tokens and push secret of the first start are kept beside the edge's state, so a
  // restart on the same database works; delete both (and rollgate.db) to start afresh.
  const persist = process.env.EDGE_STATE ?? ".rollgate-edge";
  const db = process.env.ROLLGATE_DB ?? "rollgate.db";
  // An edge refuses versions older than its own, so its state only makes sense with its database.
  if (!existsSync(db)) rmSync(persist, { recursive: true, force: true });
  const secretsFile = join(persist, "local-secrets.json");
  const secrets = existsSync(secretsFile) ? JSON.parse(readFileSync(secretsFile, "utf8")) : {};
  const stack = await startStack({
    db,
    controlPort: Number(process.env.CONTROL_PORT ?? 8080),
    edgePort: Number(process.env.EDGE_PORT ?? 8787),
    persist,
    secrets,
  });
  mkdirSync(persist, { recursive: true });
  writeFileSync(secretsFile, JSON.stringify(stack.secrets), { mode: 0o600 });
  const { controlPlane, edge, adminToken, appToken } = stack;
  console.log(`
Rollgate is running: the control plane on ${controlPlane} (SQLite: rollgate.db), and a
production edge in Miniflare on ${edge}, registered with it. The demo flag is checkout-v2.

  export ADMIN=${adminToken}
  export APP=${appToken}

Evaluate at the edge, as an app does:
  curl -X POST -H "X-API-Key: $APP" -H 'Content-Type: application/json' \\
       -d '{"context": {"targetingKey": "user-42"}}' ${edge}/ofrep/v1/evaluate/flags/checkout-v2

Roll it out to 50% of production, then kill it:
  curl -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \\
       -d '{"percent": 50, "stage": "beta", "reason": "healthy at 5%"}' \\
       ${controlPlane}/api/v1/environments/production/flags/checkout-v2/rollout
  curl -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \\
       -d '{"reason": "errors"}' ${controlPlane}/api/v1/environments/production/flags/checkout-v2/kill

Or open the dashboard, ${controlPlane}/, and log in with the admin token.

Ctrl-C stops both.`);
  const shutdown = async () => {
    await stack.stop();
    process.exit(0);
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
}
