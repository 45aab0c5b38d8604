// The edge worker in the real Workers runtime (workerd, through Miniflare): pushes, durability,
// OFREP answers and auth. Run after edge-worker/build: `node --test` in edge-worker/.
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { startEdge } from "../js/edge.mjs";

const SECRET = "push-secret-for-edge-tests";
const READER = "rg_edge_test_reader_token";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");
const sign = (body, secret = SECRET) =>
  `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;

/** An envelope as the control plane sends it: checkout-v2 at `percent`, maybe killed. */
function envelope({ version, readersRevision = 1, percent = 50000, enabled = true, environment = "production" }) {
  return JSON.stringify({
    environment,
    version,
    readers_revision: readersRevision,
    readers: [sha256(READER)],
    snapshot: {
      schema: 1,
      environment,
      version,
      flags: [
        {
          key: "checkout-v2", type: "boolean", variants: { on: true, off: false }, off_variant: "off",
          enabled, fallthrough: { rollout: { percent, inside: "on", outside: "off" } },
        },
      ],
    },
  });
}

async function push(edge, body, signature = sign(body)) {
  const headers = { "content-type": "application/json" };
  if (signature) headers["x-rollgate-signature"] = signature;
  const response = await fetch(`${edge.url}/rollgate/v1/push`, { method: "POST", headers, body });
  return { status: response.status, body: await response.json() };
}

async function evaluate(edge, flag, context, token = READER, headers = {}) {
  const path = flag ? `/ofrep/v1/evaluate/flags/${flag}` : "/ofrep/v1/evaluate/flags";
  const response = await fetch(`${edge.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { "x-api-key": token } : {}), ...headers },
    body: JSON.stringify({ context }),
  });
  const text = await response.text();
  return { status: response.status, etag: response.headers.get("etag"), body: text ? JSON.parse(text) : null };
}

async function servedVersion(edge) {
  return (await (await fetch(`${edge.url}/rollgate/v1/status`)).json()).version;
}

describe("an edge", () => {
  let edge;
  let persist;

  before(async () => {
    persist = mkdtempSync(join(tmpdir(), "rollgate-edge-"));
    edge = await startEdge({ bindings: { PUSH_SECRET: SECRET }, persist });
  });

  after(async () => {
    await edge.dispose();
    rmSync(persist, { recursive: true, force: true });
  });

  test("without a configuration answers GENERAL, never a value", async () => {
    const { status, body } = await evaluate(edge, "checkout-v2", { targetingKey: "u" });
    assert.equal(status, 500);
    assert.deepEqual(body, { key: "checkout-v2", errorCode: "GENERAL", errorDetails: "no configuration yet" });
    assert.equal(await servedVersion(edge), null);
  });

  test("refuses unsigned, wrongly signed, foreign and malformed pushes, changing nothing", async () => {
    const body = envelope({ version: 3 });
    const unsigned = await push(edge, body, null);
    assert.equal(unsigned.status, 401);
    assert.equal(unsigned.body.refusal, "unsigned", "the control plane reads the kind, not the prose");
    assert.equal((await push(edge, body, sign(body, "another-secret"))).status, 401);
    assert.equal((await push(edge, body, sign(body + " "))).status, 401);
    assert.equal((await push(edge, envelope({ version: 3, environment: "staging" }))).status, 422);
    assert.equal((await push(edge, '{"version": 3}')).status, 422);
    const invalid = envelope({ version: 3, percent: 100001 });
    const refused = await push(edge, invalid);
    assert.equal(refused.status, 422);
    assert.match(refused.body.detail, /percent/);
    assert.equal(refused.body.refusal, "invalid");
    assert.equal(await servedVersion(edge), null);
  });

  test("takes a signed push and serves it over OFREP", async () => {
    const accepted = await push(edge, envelope({ version: 3 }));
    assert.equal(accepted.status, 200);
    assert.deepEqual(accepted.body, { version: 3, readers_revision: 1 });
    const { status, body } = await evaluate(edge, "checkout-v2", { targetingKey: "user-1" });
    assert.equal(status, 200);
    assert.equal(body.key, "checkout-v2");
    assert.equal(body.reason, "SPLIT");
    assert.ok(["on", "off"].includes(body.variant));
  });

  test("refuses a stale or replayed push", async () => {
    for (const stale of [envelope({ version: 3 }), envelope({ version: 2 }), envelope({ version: 4, readersRevision: 0 })]) {
      const refused = await push(edge, stale);
      assert.equal(refused.status, 422);
      assert.match(refused.body.detail, /stale/);
      assert.equal(refused.body.refusal, "stale");
      assert.deepEqual(refused.body.have, [3, 1], "the position the edge has");
    }
    assert.equal(await servedVersion(edge), 3);
  });

  test("needs a reader token of its environment", async () => {
    assert.equal((await evaluate(edge, "checkout-v2", { targetingKey: "u" }, null)).status, 401);
    assert.equal((await evaluate(edge, "checkout-v2", { targetingKey: "u" }, "rg_unknown")).status, 401);
    const bearer = await evaluate(edge, "checkout-v2", { targetingKey: "u" }, null, {
      authorization: `Bearer ${READER}`,
    });
    assert.equal(bearer.status, 200);
  });

  test("answers OFREP failures in OFREP's shape", async () => {
    const missing = await evaluate(edge, "nope", { targetingKey: "u" });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.errorCode, "FLAG_NOT_FOUND");
    const noKey = await evaluate(edge, "checkout-v2", {});
    assert.equal(noKey.status, 400);
    assert.equal(noKey.body.errorCode, "TARGETING_KEY_MISSING");
  });

  test("bulk evaluation has an ETag and answers 304 until the configuration changes", async () => {
    const first = await evaluate(edge, null, { targetingKey: "user-7" });
    assert.equal(first.status, 200);
    assert.equal(first.body.flags.length, 1);
    const again = await evaluate(edge, null, { targetingKey: "user-7" }, READER, { "if-none-match": first.etag });
    assert.equal(again.status, 304);
    assert.equal((await push(edge, envelope({ version: 4, enabled: false }))).status, 200);
    const killed = await evaluate(edge, null, { targetingKey: "user-7" }, READER, { "if-none-match": first.etag });
    assert.equal(killed.status, 200);
    assert.equal(killed.body.flags[0].reason, "DISABLED");
  });

  test("a fresh isolate starts from the durable configuration", async () => {
    await edge.dispose();
    edge = await startEdge({ bindings: { PUSH_SECRET: SECRET }, persist });
    const { status, body } = await evaluate(edge, "checkout-v2", { targetingKey: "user-1" });
    assert.equal(status, 200);
    assert.equal(body.reason, "DISABLED", "version 4, the last one pushed, killed the flag");
    assert.equal(await servedVersion(edge), 4);
    assert.equal((await push(edge, envelope({ version: 4 }))).status, 422, "and it still knows what it has");
  });
});

test("a configuration larger than one storage write is stored whole and survives a restart", async () => {
  const persist = mkdtempSync(join(tmpdir(), "rollgate-edge-large-"));
  let edge = await startEdge({ bindings: { PUSH_SECRET: SECRET }, persist });
  try {
    // About 16 MB: more chunks than a Durable Object takes in one put.
    const members = Array.from({ length: 700000 }, (_, i) => `member-${String(i).padStart(12, "0")}`);
    const body = JSON.stringify({
      environment: "production", version: 9, readers_revision: 1, readers: [sha256(READER)],
      snapshot: { schema: 1, environment: "production", version: 9,
        segments: [{ key: "everyone-listed", included: members }],
        flags: [{ key: "listed", type: "boolean", variants: { on: true, off: false }, off_variant: "off",
          rules: [{ segments: ["everyone-listed"], serve: { variant: "on" } }], fallthrough: { variant: "off" } }] },
    });
    assert.ok(body.length > 128 * 100 * 1024, `${body.length} bytes`);
    assert.equal((await push(edge, body)).status, 200);
    await edge.dispose();
    edge = await startEdge({ bindings: { PUSH_SECRET: SECRET }, persist });
    const member = await evaluate(edge, "listed", { targetingKey: members[654321] });
    assert.deepEqual([member.status, member.body.variant, member.body.reason], [200, "on", "TARGETING_MATCH"]);
    const stranger = await evaluate(edge, "listed", { targetingKey: "stranger" });
    assert.equal(stranger.body.variant, "off");
  } finally {
    await edge.dispose();
    rmSync(persist, { recursive: true, force: true });
  }
});
