// Browsers at the edge: the OpenFeature web SDK with the newest OFREP web provider, in headless
// Chromium, on a page from another origin, with a client token. It evaluates, hears of a kill
// through the edge's event stream (its polling stays off), and is refused flags not marked for
// clients. Beside it: CORS preflights. The event stream's conformance to OFREP is
// ofrep-event-streams.test.mjs.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { nextChange, openApp, startAppServer } from "../browser-app.mjs";
import { startStack, until } from "../stack.mjs";
import { launchChromium } from "./fixtures.mjs";

const FLAG = "browser-banner";
const STATE = "/api/v1/environments/production/flags";

let stack;
let app;
let otherApp;
let browser;
let clientToken;

before(async () => {
  stack = await startStack();
  app = await startAppServer("127.0.0.2");
  otherApp = await startAppServer("127.0.0.3");
  const flag = { key: FLAG, type: "boolean", variants: { on: true, off: false }, off_variant: "off", client_visible: true };
  assert.equal((await stack.api("POST", "/api/v1/flags", flag)).status, 201);
  const on = { enabled: true, fallthrough: { variant: "on" }, reason: "on for every visitor" };
  assert.equal((await stack.api("PUT", `${STATE}/${FLAG}`, on)).status, 200);
  const origins = { allowed_origins: [app.origin] };
  assert.equal((await stack.api("PUT", "/api/v1/environments/production/allowed-origins", origins)).status, 200);
  const created = await stack.api("POST", "/api/v1/tokens", { name: "web-app", scope: "client", environment: "production" });
  clientToken = created.body.token;
  // The token came after the origins, in a later readers revision: once the edge knows it, the
  // edge has both.
  await until(async () => (await bulk(clientToken)).response.status === 200, 10000, "the edge to know the client token");
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await app?.close();
  await otherApp?.close();
  await stack?.stop();
});

async function bulk(token, { origin } = {}) {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(origin ? { origin } : {}) },
    body: JSON.stringify({ context: { targetingKey: "visitor-1" } }),
  });
  return { response, body: await response.json() };
}

describe("a browser app on another origin", () => {
  let page;

  test("evaluates client-visible flags with a client token, and no other flag", async () => {
    const opened = await openApp(browser, { origin: app.origin, edge: stack.edge, token: clientToken, watch: FLAG });
    assert.deepEqual(opened.started, { ok: true });
    page = opened.page;
    const banner = await page.evaluate((flag) => window.client.getBooleanDetails(flag, false), FLAG);
    assert.equal(banner.value, true);
    assert.equal(banner.variant, "on");
    assert.equal(banner.reason, "STATIC");
    const hidden = await page.evaluate(() => window.client.getBooleanDetails("checkout-v2", true));
    assert.equal(hidden.errorCode, "FLAG_NOT_FOUND");
    assert.equal(hidden.value, true, "the app's default");
    // The provider follows the edge's event stream (it polls only if told to, and is not).
    await until(async () => opened.streams.length > 0, 5000, "the event stream to open");
    assert.match(opened.streams[0], /^http:\/\/127\.0\.0\.1:\d+\/ofrep\/v1\/events\?token=[0-9a-f]{64}$/);
  });

  test("hears of a kill and of its undoing through the event stream, without a reload", async (t) => {
    const latencies = [];
    for (let round = 0; round < 5; round++) {
      const seen = await page.evaluate(() => window.changes.length);
      const killedAt = Date.now();
      assert.equal((await stack.api("POST", `${STATE}/${FLAG}/kill`, { reason: `round ${round}` })).status, 200);
      const killed = await nextChange(page, seen);
      assert.deepEqual([killed.value, killed.reason], [false, "DISABLED"]);
      latencies.push(killed.at - killedAt);
      assert.equal((await stack.api("POST", `${STATE}/${FLAG}/unkill`, { reason: "fixed" })).status, 200);
      const restored = await nextChange(page, seen + 1);
      assert.deepEqual([restored.value, restored.reason], [true, "STATIC"]);
    }
    const details = await page.evaluate((flag) => window.client.getBooleanDetails(flag, false), FLAG);
    assert.equal(details.value, true);
    t.diagnostic(`kill to browser (ms): ${latencies.join(", ")}`);
  });

  test("a page from an origin the environment does not allow cannot evaluate", async () => {
    const opened = await openApp(browser, { origin: otherApp.origin, edge: stack.edge, token: clientToken, watch: FLAG });
    assert.equal(opened.started.ok, false, "the provider could not reach the edge");
    await opened.page.close();
  });

  test("a credentialed request is refused by the browser, as the edge never allows credentials", async () => {
    const outcome = await page.evaluate(async ([edge, token]) => {
      const call = (credentials) => fetch(`${edge}/ofrep/v1/evaluate/flags`, {
        method: "POST", credentials,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ context: { targetingKey: "visitor-1" } }),
      }).then((response) => response.status, (error) => error.name);
      return { plain: await call("same-origin"), credentialed: await call("include") };
    }, [stack.edge, clientToken]);
    assert.deepEqual(outcome, { plain: 200, credentialed: "TypeError" });
  });
});

describe("the edge's CORS preflights", () => {
  const preflight = (origin, method = "POST", headers = "authorization, content-type") =>
    fetch(`${stack.edge}/ofrep/v1/evaluate/flags`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
    });

  test("allow the environment's origins, with OFREP's methods and headers, never credentials", async () => {
    const allowed = await preflight(app.origin, "POST", "authorization, content-type, if-none-match");
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get("access-control-allow-origin"), app.origin);
    assert.match(allowed.headers.get("access-control-allow-methods"), /POST/);
    assert.match(allowed.headers.get("access-control-allow-headers"), /if-none-match/);
    assert.equal(allowed.headers.get("access-control-allow-credentials"), null);
    assert.match(allowed.headers.get("vary"), /origin/i);
    const answer = await bulk(clientToken, { origin: app.origin });
    assert.equal(answer.response.headers.get("access-control-allow-origin"), app.origin);
    assert.equal(answer.response.headers.get("access-control-expose-headers"), "etag");
    assert.equal(answer.response.headers.get("access-control-allow-credentials"), null);
  });

  test("refuse other origins, methods and headers, without CORS headers", async () => {
    for (const [origin, method, headers] of [
      [otherApp.origin, "POST", "content-type"],
      ["null", "POST", "content-type"],
      [app.origin.replace("http:", "https:"), "POST", "content-type"],
      [app.origin, "DELETE", "content-type"],
      [app.origin, "POST", "cookie"],
    ]) {
      const refused = await preflight(origin, method, headers);
      assert.equal(refused.status, 403, `${origin} ${method} ${headers}`);
      assert.equal(refused.headers.get("access-control-allow-origin"), null);
    }
    const answer = await bulk(clientToken, { origin: otherApp.origin });
    assert.equal(answer.response.headers.get("access-control-allow-origin"), null);
  });
});
