// The fan-out design in Miniflare: three locations (each a Worker, its own isolate and cache
// partition) in two regions, each region's envelope in its own Durable Object. A push to one
// location reaches every regional object; other locations serve it after their refresh, and
// the event streams of another region hear of it at once. Run after edge-worker/build.
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { after, before, test } from "node:test";

import { startLocations } from "../js/edge.mjs";

const SECRET = "push-secret-for-location-tests";
const READER = "rg_location_test_reader_token";
const sha256 = (text) => createHash("sha256").update(text).digest("hex");

function envelope(version, enabled = true) {
  return JSON.stringify({
    environment: "production", version, readers_revision: 1, readers: [sha256(READER)],
    snapshot: { schema: 1, environment: "production", version, flags: [
      { key: "checkout-v2", type: "boolean", variants: { on: true, off: false }, off_variant: "off",
        enabled, fallthrough: { variant: "on" } },
    ] },
  });
}

let edge;

before(async () => {
  edge = await startLocations({
    regions: ["weur", "apac"],
    locations: [{ name: "paris", region: "weur" }, { name: "frankfurt", region: "weur" }, { name: "tokyo", region: "apac" }],
    bindings: { PUSH_SECRET: SECRET },
  });
});

after(async () => {
  await edge?.dispose();
});

async function push(location, body) {
  const signature = `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`;
  const response = await fetch(`${edge.urls[location]}/rollgate/v1/push`, {
    method: "POST", headers: { "content-type": "application/json", "x-rollgate-signature": signature }, body,
  });
  return { status: response.status, body: await response.json() };
}

async function variant(location) {
  const response = await fetch(`${edge.urls[location]}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST", headers: { "x-api-key": READER, "content-type": "application/json" }, body: "{}",
  });
  return (await response.json()).variant;
}

const status = async (location) => (await fetch(`${edge.urls[location]}/rollgate/v1/status`)).json();

/** Asks `check` again until it holds: each ask is a request, which is what makes a location look. */
async function until(check, what) {
  const deadline = Date.now() + 10000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

test("a push to one location reaches every region, and every location serves it", async () => {
  assert.equal((await push("paris", envelope(1))).status, 200);
  assert.equal((await status("paris")).version, 1);
  assert.equal(await variant("paris"), "on");
  assert.equal((await status("paris")).region, "config-weur");
  // Tokyo's isolate starts from its own region's object, which the push wrote too.
  assert.equal(await variant("tokyo"), "on");
  assert.equal((await status("tokyo")).region, "config-apac");
  assert.equal(await variant("frankfurt"), "on");

  const stream = await fetch(`${edge.urls.tokyo}/ofrep/v1/events`, { headers: { "x-api-key": READER, "last-event-id": "1.1" } });
  const reader = stream.body.getReader();

  // The kill lands in Paris, which serves it at once.
  assert.equal((await push("paris", envelope(2, false))).status, 200);
  assert.equal(await variant("paris"), "off");
  // A browser told of it by its event stream re-fetches in Tokyo before Tokyo's refresh: the
  // isolate reads its region's object first, so the answer is never older than the event.
  const refetch = await fetch(`${edge.urls.tokyo}/ofrep/v1/evaluate/flags?flagConfigEtag=${encodeURIComponent('"2.1"')}`, {
    method: "POST", headers: { "x-api-key": READER, "content-type": "application/json" }, body: "{}",
  });
  assert.equal((await refetch.json()).flags[0].reason, "DISABLED");
  // Frankfurt serves it after its location's next refresh, from its own region's object.
  await until(async () => (await variant("frankfurt")) === "off", "Frankfurt to serve the kill");
  // It came through the location's cache, not the once-a-second fallback for a cache that
  // keeps nothing.
  assert.equal((await status("frankfurt")).location_cache, true);
  // Tokyo's event stream, held by the apac object, heard of it without anyone polling.
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /^id: 2\.1\nevent: message\ndata: \{"type":"refetchEvaluation","etag":"\\"2\.1\\""\}/);
  await reader.cancel();

  // Every region has version 2: an old push is stale everywhere, and changes nothing.
  const stale = await push("tokyo", envelope(1));
  assert.equal(stale.status, 422);
  assert.equal(stale.body.refusal, "stale");
  assert.deepEqual(stale.body.have, [2, 1]);
  assert.equal(await variant("tokyo"), "off");
});

test("a new regional object fills itself from the control plane when first asked", async () => {
  const { createServer } = await import("node:http");
  const body = envelope(7);
  const signature = `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`;
  let pulls = 0;
  const controlPlane = createServer((request, response) => {
    pulls += 1;
    const authorized = request.headers.authorization === "Bearer rg_pull_token_for_tests";
    response.writeHead(authorized ? 200 : 401, { "x-rollgate-signature": signature, "content-type": "application/json" });
    response.end(authorized ? body : "{}");
  });
  await new Promise((resolve) => controlPlane.listen(0, "127.0.0.1", resolve));
  const fresh = await startLocations({
    regions: ["weur", "apac"],
    locations: [{ name: "lisbon", region: "weur" }, { name: "sydney", region: "apac" }],
    bindings: {
      PUSH_SECRET: SECRET,
      CONTROL_PLANE_URL: `http://127.0.0.1:${controlPlane.address().port}`,
      CONTROL_PLANE_TOKEN: "rg_pull_token_for_tests",
    },
  });
  try {
    // No push ever came: Sydney's object is empty, pulls at once, and serves what it pulled.
    const response = await fetch(`${fresh.urls.sydney}/ofrep/v1/evaluate/flags/checkout-v2`, {
      method: "POST", headers: { "x-api-key": READER, "content-type": "application/json" }, body: "{}",
    });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).variant, "on");
    assert.equal((await (await fetch(`${fresh.urls.sydney}/rollgate/v1/status`)).json()).version, 7);
    assert.equal(pulls, 1);
  } finally {
    await fresh.dispose();
    controlPlane.close();
  }
});
