// Clients that hang up, against the real binary and an edge in Miniflare: a kill or an unkill
// whose client disconnects before, during or after its commit is served by the edge exactly
// when it committed, and a read token deleted that way is refused by the edge exactly when the
// delete committed. (control-plane/tests/it/disconnects.rs does 1,000 such changes against the
// control plane's own snapshot, stream and OFREP.)
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, test } from "node:test";

import { startStack, until } from "../stack.mjs";

const CHANGES = 100;
const DELETES = 10;

let stack;

before(async () => {
  stack = await startStack();
});

after(async () => {
  await stack.stop();
});

/** Sends `bytes` on a new connection and hangs up at `point`; resolves once the server has
 *  closed its side, with the response's status if one came. */
function sendAndHangUp(bytes, point) {
  const { port } = new URL(stack.controlPlane);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1");
    socket.setNoDelay(true);
    let answer = Buffer.alloc(0);
    const status = () => {
      const match = /^HTTP\/1\.1 (\d{3})/.exec(answer.toString("latin1"));
      return match ? Number(match[1]) : null;
    };
    socket.on("data", (chunk) => {
      answer = Buffer.concat([answer, chunk]);
      if (point.kind === "after the response" && status() !== null) socket.destroy();
    });
    socket.on("close", () => resolve(status()));
    socket.on("error", (error) => (error.code === "ECONNRESET" ? resolve(status()) : reject(error)));
    socket.on("connect", () => {
      if (point.kind === "mid-request") {
        socket.end(bytes.subarray(0, point.bytes));
      } else if (point.kind === "right after the request") {
        socket.write(bytes);
        setTimeout(() => socket.end(), point.ms);
      } else {
        socket.write(bytes);
      }
    });
  });
}

function request(method, path, token, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  return Buffer.from(
    `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
  );
}

/** Where to hang up: half the time right after the request, the case that races the commit. */
function randomPoint(length) {
  const kinds = ["mid-request", "right after the request", "right after the request", "after the response"];
  const kind = kinds[Math.floor(Math.random() * kinds.length)];
  return { kind, bytes: 1 + Math.floor(Math.random() * (length - 1)), ms: Math.random() * 3 };
}

/** A change in staging: committed after every earlier change. */
async function fence() {
  const { status } = await stack.api("POST", "/api/v1/environments/staging/flags/checkout-v2/kill", { reason: "fence" });
  assert.equal(status, 200);
}

async function atTheEdge(token) {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST",
    headers: { "x-api-key": token, "content-type": "application/json" },
    body: JSON.stringify({ context: { targetingKey: "user-1" } }),
  });
  return { status: response.status, body: await response.json() };
}

test("a kill or unkill whose client hangs up is served at the edge exactly when it committed", async () => {
  const tally = {};
  let slowest = 0;
  let committed = 0;
  let enabled = true;
  for (let i = 0; i < CHANGES; i++) {
    // Always the opposite of the current state, so every change that commits shows.
    const action = enabled ? "kill" : "unkill";
    const bytes = request("POST", `/api/v1/environments/production/flags/checkout-v2/${action}`, stack.adminToken, { reason: "hang-up test" });
    const point = randomPoint(bytes.length);
    const answered = await sendAndHangUp(bytes, point);
    await fence();
    const fenced = Date.now();
    const { body: flag } = await stack.api("GET", "/api/v1/flags/checkout-v2");
    enabled = flag.environments.production.enabled;
    const { body: audit } = await stack.api("GET", "/api/v1/audit?flag=checkout-v2&env=production&limit=10000");
    const changes = audit.filter((record) => ["flag.kill", "flag.unkill"].includes(record.action)).length;
    const made = changes > committed;
    committed = changes;
    tally[point.kind] = tally[point.kind] ?? { requests: 0, committed: 0, committedUnanswered: 0 };
    tally[point.kind].requests += 1;
    tally[point.kind].committed += made ? 1 : 0;
    tally[point.kind].committedUnanswered += made && answered === null ? 1 : 0;
    if (point.kind === "mid-request") assert.equal(made, false, "an incomplete request changed something");
    await until(async () => {
      const { body } = await atTheEdge(stack.appToken);
      return (body.reason === "DISABLED") === !enabled;
    }, 10000, `the edge to serve ${enabled ? "enabled" : "disabled"} after ${point.kind}`);
    slowest = Math.max(slowest, Date.now() - fenced);
  }
  console.log(`${CHANGES} changes with hang-ups, ${committed} committed: ${JSON.stringify(tally)}; the edge served each within ${slowest} ms`);
  assert.equal(Object.keys(tally).length, 3);
});

test("a read token deleted by a client that hangs up is refused at the edge exactly when the delete committed", async () => {
  let deleted = 0;
  for (let i = 0; i < DELETES; i++) {
    const name = `hang-up-${i}`;
    const created = await stack.api("POST", "/api/v1/tokens", { name, scope: "read", environment: "production" });
    assert.equal(created.status, 201);
    const secret = created.body.token;
    await until(async () => (await atTheEdge(secret)).status === 200, 10000, "the edge to take the new token");
    const bytes = request("DELETE", `/api/v1/tokens/${name}`, stack.adminToken);
    await sendAndHangUp(bytes, randomPoint(bytes.length));
    await fence();
    const { body: tokens } = await stack.api("GET", "/api/v1/tokens");
    const stored = tokens.some((token) => token.name === name);
    assert.equal((await stack.api("GET", "/api/v1/environments/production/snapshot", undefined, secret)).status, stored ? 200 : 401);
    if (stored) {
      assert.equal((await atTheEdge(secret)).status, 200);
    } else {
      deleted += 1;
      await until(async () => (await atTheEdge(secret)).status === 401, 10000, "the edge to refuse the deleted token");
    }
  }
  console.log(`${DELETES} token deletes with hang-ups, ${deleted} committed`);
});
