// The Node in-process provider (sdks/node) against OFREP, through the OpenFeature server SDK:
// the demo flag checkout-v2 (a 25% rollout) for 1,000 rotating users, evaluated one after
// another (ROUNDS, default 20,000 for the provider, 2,000 over HTTP) with the provider, with
// the npm OFREP provider pointed at the control plane, and pointed at the edge in Miniflare;
// then the heap the Node provider holds for the 10,000-flag snapshot.
// Usage: node --expose-gc benches/providers/node.mjs
//   (after cargo build --release -p control-plane --bin rollgate -p benches --bin large_snapshot,
//    edge-worker/build, .ci/build-wasm and sdks/node/build)
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { startStack } from "../../tests/stack.mjs";
import { createFlags } from "../../tests/e2e/fixtures.mjs";
import { RollgateProvider } from "../../sdks/node/src/index.js";

// The OpenFeature SDK and OFREP provider the end-to-end tests install.
const tests = createRequire(join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "package.json"));
const { OpenFeature } = await import(tests.resolve("@openfeature/server-sdk"));
const { OFREPProvider } = await import(tests.resolve("@openfeature/ofrep-provider"));

const rounds = Number(process.env.ROUNDS ?? 20000);
const users = Array.from({ length: 1000 }, (_, i) => ({ targetingKey: `user-${i}`, country: i % 2 ? "SE" : "DE" }));

async function time(label, client, count) {
  for (let i = 0; i < 200; i++) await client.getBooleanDetails("checkout-v2", false, users[i % users.length]);
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const details = await client.getBooleanDetails("checkout-v2", false, users[i % users.length]);
    if (details.errorCode) throw new Error(`${label}: ${details.errorCode}`);
  }
  const perCall = Number(process.hrtime.bigint() - started) / count;
  console.log(`${label}: ${(perCall / 1000).toFixed(2)} µs per evaluation (${count} evaluations)`);
  return perCall;
}

const stack = await startStack();
try {
  await createFlags(stack.api);
  const inProcess = new RollgateProvider({ url: stack.controlPlane, token: stack.appToken, environment: "production" });
  await OpenFeature.setProviderAndWait("in-process", inProcess);
  await OpenFeature.setProviderAndWait("control-plane", new OFREPProvider({ baseUrl: stack.controlPlane, headers: [["X-API-Key", stack.appToken]] }));
  await OpenFeature.setProviderAndWait("edge", new OFREPProvider({ baseUrl: stack.edge, headers: [["X-API-Key", stack.appToken]] }));
  const local = await time("Node provider, in-process", OpenFeature.getClient("in-process"), rounds);
  const controlPlane = await time("OFREP to the control plane", OpenFeature.getClient("control-plane"), Math.ceil(rounds / 10));
  const edge = await time("OFREP to the edge (Miniflare)", OpenFeature.getClient("edge"), Math.ceil(rounds / 10));
  console.log(`in-process is ${(controlPlane / local).toFixed(0)}× faster than OFREP to the control plane and ${(edge / local).toFixed(0)}× faster than to the edge, on loopback`);
  await OpenFeature.close();
} finally {
  await stack.stop();
}

// Memory: the provider bootstrapped from the 10,000-flag snapshot, the control plane unreachable.
const target = process.env.CARGO_TARGET_DIR ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "target");
const path = join(mkdtempSync(join(tmpdir(), "rollgate-node-memory-")), "large.json");
writeFileSync(path, execFileSync(join(target, "release", "large_snapshot"), { maxBuffer: 1 << 30 }));
const settle = () => { globalThis.gc?.(); globalThis.gc?.(); return process.memoryUsage(); };
const before = settle();
let provider = new RollgateProvider({ url: "http://127.0.0.1:9", token: "rg_benchmark", environment: "production", bootstrap: path, metricsIntervalMs: null });
const after = settle();
const mb = (bytes) => (bytes / 1e6).toFixed(1);
console.log(`Node provider, 10,000 flags + 100 segments x 10,000 keys: RSS +${mb(after.rss - before.rss)} MB ` +
  `(JS heap +${mb(after.heapUsed - before.heapUsed)} MB, WebAssembly and buffers +${mb(after.arrayBuffers - before.arrayBuffers + after.external - before.external)} MB), version ${provider.version}`);
provider = null;
if (!globalThis.gc) console.log("(run with node --expose-gc for settled figures)");
