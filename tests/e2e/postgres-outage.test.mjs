// PostgreSQL stops for 10 s under two replicas and an edge in Miniflare. Replicas keep serving
// snapshots, streams and OFREP from memory and refuse writes with 503 and Retry-After; the edge
// keeps serving; when the database is back, both replicas reconnect and catch up.
import assert from "node:assert/strict";
import { test } from "node:test";

import { checkoutAtEdge } from "./fixtures.mjs";
import { startPostgres } from "../postgres.mjs";
import { followStream, startControlPlane, startStack, until } from "../stack.mjs";

const OUTAGE_MS = 10000;
const FLAG = "/api/v1/environments/production/flags/checkout-v2";

async function ofrep(base, token) {
  const response = await fetch(`${base}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: '{"context":{"targetingKey":"user-42"}}',
  });
  return { status: response.status, ...(await response.json()) };
}

async function write(base, token, action) {
  const response = await fetch(`${base}${FLAG}/${action}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ reason: "outage test" }),
  });
  return { status: response.status, retryAfter: response.headers.get("retry-after"), body: await response.json() };
}

test("with PostgreSQL stopped for 10 s, replicas and the edge keep serving, then catch up", { timeout: 120000 }, async () => {
  const postgres = await startPostgres();
  const db = await postgres.database("rollgate");
  const stack = await startStack({ db });
  const { adminToken, pushSecret, appToken } = stack.secrets;
  const other = await startControlPlane({ db, adminToken, pushSecret });
  const replicas = [stack.controlPlane, other.url];
  const streams = [];
  try {
    // A kill through the second replica, served everywhere.
    const killed = await write(other.url, adminToken, "kill");
    assert.equal(killed.status, 200);
    for (const base of replicas) {
      await until(async () => (await ofrep(base, appToken)).reason === "DISABLED", 5000, `the kill at ${base}`);
    }
    await until(async () => (await checkoutAtEdge(stack, "user-42")).reason === "DISABLED", 5000, "the kill at the edge");
    for (const base of replicas) streams.push(followStream(base, appToken));
    await until(async () => streams.every((s) => s.versions.length === 1), 5000, "both streams' first snapshot");
    const killVersion = streams[0].versions[0];
    assert.deepEqual(streams[1].versions, [killVersion]);

    await postgres.stop();
    const outageEnds = Date.now() + OUTAGE_MS;
    const seen = { reads: 0, refusedWrites: 0, unready: 0 };
    while (Date.now() < outageEnds) {
      for (const base of replicas) {
        const answer = await ofrep(base, appToken);
        assert.equal(answer.status, 200, `OFREP at ${base} during the outage`);
        assert.equal(answer.reason, "DISABLED");
        const snapshot = await fetch(`${base}/api/v1/environments/production/snapshot`, {
          headers: { authorization: `Bearer ${appToken}`, "if-none-match": `"${killVersion}"` },
        });
        assert.equal(snapshot.status, 304, `the snapshot at ${base} during the outage`);
        const refused = await write(base, adminToken, "unkill");
        assert.equal(refused.status, 503, `a write at ${base} during the outage: ${JSON.stringify(refused.body)}`);
        assert.ok(Number(refused.retryAfter) > 0, "503 says when to retry");
        seen.refusedWrites += 1;
        if ((await fetch(`${base}/readyz`)).status === 503) seen.unready += 1;
        seen.reads += 1;
      }
      const atEdge = await checkoutAtEdge(stack, "user-42");
      assert.equal(atEdge.status, 200);
      assert.equal(atEdge.reason, "DISABLED", "the edge keeps serving the kill");
      assert.ok(streams.every((s) => !s.ended), `streams stay open: ${streams.map((s) => s.error)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(seen.reads >= 20, `reads checked throughout the outage: ${JSON.stringify(seen)}`);
    assert.equal(seen.unready, seen.reads, "/readyz reports the database down on every replica");

    // Back: the replicas reconnect by themselves; a write through the first replica reaches the
    // second replica's stream, the first's, and the edge, with no gap.
    await postgres.start();
    for (const base of replicas) {
      await until(async () => (await fetch(`${base}/readyz`)).ok, 30000, `${base} ready again`);
    }
    const unkilled = await until(async () => {
      const answer = await write(stack.controlPlane, adminToken, "unkill");
      return answer.status === 200 && answer;
    }, 15000, "a write after the outage");
    assert.equal(unkilled.status, 200);
    for (const base of replicas) {
      await until(async () => (await ofrep(base, appToken)).reason !== "DISABLED", 5000, `the unkill at ${base}`);
    }
    await until(async () => (await checkoutAtEdge(stack, "user-42")).reason !== "DISABLED", 10000, "the unkill at the edge");
    await until(async () => streams.every((s) => s.versions.length === 2), 5000, "the unkill on both streams");
    for (const stream of streams) assert.deepEqual(stream.versions, [killVersion, killVersion + 1]);
    // Nothing refused during the outage was stored.
    const audit = (await stack.api("GET", "/api/v1/audit?flag=checkout-v2")).body;
    const actions = audit.filter((r) => r.reason === "outage test").map((r) => r.action);
    assert.deepEqual(actions, ["flag.kill", "flag.unkill"]);
  } finally {
    for (const stream of streams) stream.controller.abort();
    await other.kill();
    await stack.stop();
    await postgres.remove();
  }
});

