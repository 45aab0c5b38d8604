// Browsers at the edge: the OpenFeature web SDK with the newest OFREP web provider, in headless
// Chromium, on a page from another origin, with a client token. It evaluates, hears of a kill
// through the edge's event stream (its polling stays off), and is refused flags not marked for
// clients. Beside it: CORS preflights and the event stream's conformance to OFREP (ADR-0008).
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

/** Reads server-sent events from `response` as they come. */
function eventReader(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const next = async () => {
    for (;;) {
      const end = buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = {};
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const at = line.indexOf(":");
          fields[line.slice(0, at)] = line.slice(at + 1).replace(/^ /, "");
        }
        if (fields.data !== undefined) return fields;
        continue;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("the event stream ended");
      buffer += decoder.decode(value, { stream: true });
    }
  };
  next.cancel = () => reader.cancel();
  return next;
}

async function bulk(token, { origin, query = "" } = {}) {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags${query}`, {
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

describe("the edge's OFREP event stream", () => {
  test("is advertised in bulk answers, for read and client tokens, as OFREP shapes it", async () => {
    for (const token of [clientToken, stack.appToken]) {
      const { response, body } = await bulk(token);
      assert.equal(response.status, 200);
      assert.ok(Array.isArray(body.flags));
      assert.equal(body.eventStreams.length, 1);
      const [stream] = body.eventStreams;
      assert.deepEqual(Object.keys(stream).sort(), ["inactivityDelaySec", "type", "url"]);
      assert.equal(stream.type, "sse");
      assert.ok(Number.isInteger(stream.inactivityDelaySec) && stream.inactivityDelaySec > 0);
      assert.equal(new URL(stream.url).origin, stack.edge);
      assert.ok(!stream.url.includes(token), "the URL carries a stream key, never the token");
    }
    const { body } = await bulk(clientToken);
    assert.deepEqual(body.flags.map((flag) => flag.key), [FLAG], "a client token sees its flags only");
  });

  test("sends refetchEvaluation with the new etag on every change, resumes, and takes flagConfigEtag", async () => {
    const url = (await bulk(clientToken)).body.eventStreams[0].url;
    const first = await fetch(url);
    assert.equal(first.status, 200);
    assert.match(first.headers.get("content-type"), /^text\/event-stream/);
    const next = eventReader(first);
    // A new stream hears of the current configuration at once.
    const current = await next();
    assert.equal(current.event, "message");
    const message = JSON.parse(current.data);
    assert.deepEqual(Object.keys(message).sort(), ["etag", "type"]);
    assert.equal(message.type, "refetchEvaluation");
    assert.match(message.etag, /^"\d+\.\d+"$/);

    // Resumed from the current one: nothing until the next change, then that change.
    const resumed = await fetch(url, { headers: { "last-event-id": current.id } });
    const nextResumed = eventReader(resumed);
    assert.equal((await stack.api("POST", `${STATE}/${FLAG}/kill`, { reason: "stream test" })).status, 200);
    const killed = await next();
    const killedResumed = await nextResumed();
    assert.notEqual(killed.id, current.id);
    assert.deepEqual(killedResumed, killed);
    const etag = JSON.parse(killed.data).etag;

    // The re-fetch names the configuration the event announced.
    const refetched = await bulk(clientToken, { query: `?flagConfigEtag=${encodeURIComponent(etag)}&flagConfigLastModified=0` });
    assert.equal(refetched.response.status, 200);
    assert.equal(refetched.body.flags[0].value, false);
    await stack.api("POST", `${STATE}/${FLAG}/unkill`, { reason: "stream test over" });
    assert.notEqual((await next()).id, killed.id);
    await next.cancel();
    await nextResumed.cancel();
  });

  test("ends a stream when its token is deleted", async () => {
    const created = await stack.api("POST", "/api/v1/tokens", { name: "short-lived-page", scope: "client", environment: "production" });
    await until(async () => (await bulk(created.body.token)).response.status === 200, 10000, "the edge to know the token");
    const url = (await bulk(created.body.token)).body.eventStreams[0].url;
    const next = eventReader(await fetch(url));
    await next(); // the current configuration
    assert.equal((await stack.api("DELETE", "/api/v1/tokens/short-lived-page")).status, 204);
    await assert.rejects(next(), /the event stream ended/);
    assert.equal((await fetch(url)).status, 401);
  });

  test("refuses a made-up stream key and a missing one", async () => {
    const url = new URL((await bulk(clientToken)).body.eventStreams[0].url);
    url.searchParams.set("token", "0".repeat(64));
    assert.equal((await fetch(url)).status, 401);
    url.searchParams.delete("token");
    assert.equal((await fetch(url)).status, 401);
  });
});
