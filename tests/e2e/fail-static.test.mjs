// The edge without its control plane: it keeps serving the last configuration it has, across a
// restart of its own; and when pushes stop reaching it, it pulls.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { checkoutAtEdge } from "./fixtures.mjs";
import { startStack, until } from "../stack.mjs";

test("with the control plane down, the edge serves the last known good configuration", async () => {
  const persist = mkdtempSync(join(tmpdir(), "rollgate-edge-state-"));
  const stack = await startStack({ persist });
  try {
    const rollout = await stack.api("PUT", "/api/v1/environments/production/flags/checkout-v2/rollout",
      { percent: 50, reason: "fail-static test" });
    await until(async () => (await checkoutAtEdge(stack, "user-1")).reason === "SPLIT", 5000, "the rollout at the edge");
    const users = Array.from({ length: 50 }, (_, i) => `user-${i}`);
    const before = await Promise.all(users.map((user) => checkoutAtEdge(stack, user)));

    await stack.killControlPlane();
    const during = await Promise.all(users.map((user) => checkoutAtEdge(stack, user)));
    assert.deepEqual(during, before, "the same answers with the control plane gone");

    await stack.restartEdge();
    const afterRestart = await Promise.all(users.map((user) => checkoutAtEdge(stack, user)));
    assert.deepEqual(afterRestart, before, "and from a fresh isolate, read from the Durable Object");
    assert.equal(rollout.status, 200);
  } finally {
    await stack.stop();
    rmSync(persist, { recursive: true, force: true });
  }
});

test("an edge that stops hearing pushes pulls the new configuration", async () => {
  const stack = await startStack({ edgeBindings: { PULL_INTERVAL_SECONDS: "1" } });
  try {
    // Unregistered, the edge gets no more pushes; only its own pull can bring the kill.
    const edges = (await stack.api("GET", "/api/v1/edges")).body;
    assert.equal((await stack.api("DELETE", `/api/v1/edges/${edges[0].name}`)).status, 204);
    const killed = await stack.api("POST", "/api/v1/environments/production/flags/checkout-v2/kill", { reason: "pull test" });
    assert.equal(killed.status, 200);
    const answer = await until(async () => {
      const answer = await checkoutAtEdge(stack, "user-1");
      return answer.reason === "DISABLED" && answer;
    }, 15000, "the edge to pull the kill");
    assert.equal(answer.variant, "off");
  } finally {
    await stack.stop();
  }
});
