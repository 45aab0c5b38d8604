// Kill propagation across replicas: three `rollgate serve` on one PostgreSQL (a private cluster,
// fsync on), an edge in Miniflare, SUBSCRIBERS (default 200) snapshot streams spread over
// replicas B and C. Each kill goes through replica A, which does not lead: the leader (B) learns
// it through LISTEN/NOTIFY and pushes it to the edge. Over CYCLES kills (default 100), from the
// kill's 200, until every subscriber has the kill's version and until the edge answers DISABLED
// (polled back to back, so the figure includes up to one request's round trip).
// Usage: node benches/replicas/propagation.mjs  (after a release build and edge-worker/build)
import { startPostgres } from "../../tests/postgres.mjs";
import { followStream, startControlPlane, startStack, until } from "../../tests/stack.mjs";

const cycles = Number(process.env.CYCLES ?? 100);
const subscribers = Number(process.env.SUBSCRIBERS ?? 200);
const flag = "/api/v1/environments/production/flags/checkout-v2";

const postgres = await startPostgres();
const db = await postgres.database("rollgate");
// Started first, the stack's replica takes the leader lock and pushes to the edge.
const stack = await startStack({ db });
const { adminToken, pushSecret, appToken } = stack.secrets;
const replicaA = await startControlPlane({ db, adminToken, pushSecret });
const replicaC = await startControlPlane({ db, adminToken, pushSecret });
const leading = async (base) => (await (await fetch(`${base}/metrics`)).text()).match(/^rollgate_leading 1$/m) !== null;
if (!(await leading(stack.controlPlane)) || (await leading(replicaA.url))) {
  throw new Error("replica B (the stack's) should lead, and A should not");
}

async function reasonAtEdge() {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST",
    headers: { "x-api-key": appToken, "content-type": "application/json" },
    body: '{"context":{"targetingKey":"user-42"}}',
  });
  return (await response.json()).reason;
}

async function change(action) {
  const response = await fetch(`${replicaA.url}${flag}/${action}`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: '{"reason": "propagation benchmark"}',
  });
  if (response.status !== 200) throw new Error(`${action}: ${response.status} ${await response.text()}`);
  return performance.now();
}

const streams = Array.from({ length: subscribers }, (_, i) => followStream(i % 2 ? replicaC.url : stack.controlPlane, appToken));
const latest = (stream) => stream.versions.at(-1) ?? 0;
const atStreams = [];
const atEdge = [];
const lastOfAll = [];
try {
  for (let cycle = 0; cycle < cycles; cycle++) {
    // Everyone has the same version before each kill.
    const current = await until(async () => {
      const version = latest(streams[0]);
      return version > 0 && streams.every((s) => latest(s) === version) && version;
    }, 15000, "every subscriber's current version");
    const acknowledged = await change("kill");
    while ((await reasonAtEdge()) !== "DISABLED") {}
    const edgeAt = performance.now();
    await until(async () => streams.every((s) => latest(s) > current), 15000, "the kill on every stream");
    const times = streams.map((s) => Math.max(0, s.at - acknowledged));
    atStreams.push(...times);
    atEdge.push(edgeAt - acknowledged);
    lastOfAll.push(Math.max(edgeAt - acknowledged, ...times));
    await change("unkill");
    await until(async () => (await reasonAtEdge()) !== "DISABLED", 15000, "the unkill at the edge");
  }
} finally {
  for (const stream of streams) stream.controller.abort();
  await replicaA.kill();
  await replicaC.kill();
  await stack.stop();
  await postgres.remove();
}

const summary = (samples) => {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)].toFixed(1);
  return `p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`;
};
console.log(`a kill through replica A, ${cycles} cycles, from its 200:`);
console.log(`  ${subscribers} subscribers on replicas B and C: ${summary(atStreams)}`);
console.log(`  the edge in Miniflare (pushed by B, the leader): ${summary(atEdge)}`);
console.log(`  the last of all of them, per kill:              ${summary(lastOfAll)}`);
