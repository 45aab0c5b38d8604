// Kill propagation to the in-process providers: one `rollgate serve` on SQLite, followed by the
// Rust provider (in its probe, sdks/rust/examples/probe.rs) and then by the Node one (in this
// process). Over CYCLES kills (default 100) each, from sending the kill until the provider
// serves DISABLED: the moment it reports the kill's version (it installs the engine, then says
// so), confirmed by an evaluation. Also: how often that came before the kill's 200 reached the
// client (the commit streams the new version before it answers), and the latency past the 200
// otherwise.
// Usage: node benches/providers/propagation.mjs
//   (after cargo build --release -p control-plane --bin rollgate -p rollgate-openfeature
//    --example probe, .ci/build-wasm and sdks/node/build)
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { startNodeProvider, startRustProvider } from "../../tests/providers.mjs";
import { startControlPlane } from "../../tests/stack.mjs";

const cycles = Number(process.env.CYCLES ?? 100);
const adminToken = "rg_admin_provider_propagation_0123456789";
const server = await startControlPlane({ db: join(mkdtempSync(join(tmpdir(), "rollgate-bench-")), "r.db"), demo: true, adminToken });
const flag = `${server.url}/api/v1/environments/production/flags/checkout-v2`;
const call = async (url, body) => {
  const response = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
};
const { token } = await call(`${server.url}/api/v1/tokens`, { name: "bench-app", scope: "read", environment: "production" });
const user = { targetingKey: "user-42" };
const quantile = (values, q) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil(q * values.length) - 1)]?.toFixed(2) ?? "-";

async function measure(name, startProvider) {
  const provider = await startProvider({ url: server.url, token });
  const latencies = [];
  const afterAcknowledged = [];
  try {
    for (let i = 0; i < cycles; i++) {
      const unkilled = await call(`${flag}/unkill`, { reason: "propagation benchmark" }).catch(() => null);
      if (unkilled) await provider.next("PROVIDER_CONFIGURATION_CHANGED", { test: (e) => e.version >= unkilled.version });
      const mark = provider.events.length;
      const sent = performance.now();
      const killed = await call(`${flag}/kill`, { reason: "propagation benchmark" });
      const acknowledged = performance.now();
      const event = await provider.next("PROVIDER_CONFIGURATION_CHANGED", { after: mark, test: (e) => e.version >= killed.version });
      const answer = await provider.evaluate("checkout-v2", "boolean", user);
      if (answer.reason !== "DISABLED") throw new Error(`after the kill's version the provider answered ${JSON.stringify(answer)}`);
      if (event.at < sent) throw new Error("an event from before the kill");
      latencies.push(event.at - sent);
      if (event.at > acknowledged) afterAcknowledged.push(event.at - acknowledged);
    }
  } finally {
    await provider.kill();
  }
  console.log(`${name} provider, over ${cycles} kills: from sending the kill to serving DISABLED p50 ${quantile(latencies, 0.5)} ms, ` +
    `p99 ${quantile(latencies, 0.99)} ms, max ${quantile(latencies, 1)} ms; served before the kill's 200 arrived in ` +
    `${cycles - afterAcknowledged.length} of ${cycles}; otherwise ${quantile(afterAcknowledged, 0.99)} ms past the 200 at p99`);
}

try {
  await measure("Rust", startRustProvider);
  await measure("Node", startNodeProvider);
} finally {
  await server.kill();
}
