// Kill-switch propagation to the edge: from the control plane's 200 on `kill` until the edge
// (in Miniflare) answers DISABLED, over CYCLES kill/unkill cycles (default 100). The edge is
// polled back to back, so the figure includes up to one request's round trip.
// Usage: node benches/edge/propagation.mjs   (after a release build and edge-worker/build)
import { startStack } from "../../tests/stack.mjs";

const cycles = Number(process.env.CYCLES ?? 100);
const stack = await startStack();
const flagPath = "/api/v1/environments/production/flags/checkout-v2";

async function reason() {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST",
    headers: { "x-api-key": stack.appToken, "content-type": "application/json" },
    body: '{"context":{"targetingKey":"user-42"}}',
  });
  return (await response.json()).reason;
}

async function measure(action, until) {
  const { status } = await stack.api("POST", `${flagPath}/${action}`, { reason: "propagation benchmark" });
  const acknowledged = performance.now();
  if (status !== 200) throw new Error(`${action}: ${status}`);
  let polls = 0;
  while ((await reason()) !== until) polls += 1;
  return { ms: performance.now() - acknowledged, polls };
}

const kills = [];
for (let cycle = 0; cycle < cycles; cycle++) {
  kills.push((await measure("kill", "DISABLED")).ms);
  await measure("unkill", "STATIC");
}
await stack.stop();
kills.sort((a, b) => a - b);
const at = (p) => kills[Math.min(kills.length - 1, Math.ceil(kills.length * p) - 1)].toFixed(1);
console.log(`edge kill propagation over ${cycles} cycles: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`);
