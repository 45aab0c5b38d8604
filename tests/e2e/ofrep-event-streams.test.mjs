// OFREP event streams (open-feature/protocol ADR-0008) on the edge and on the control plane,
// checked against OpenFeature's published OFREP model (../ofrep-model.mjs): bulk answers
// advertise `eventStreams`; a stream sends `refetchEvaluation` with the new etag on every change
// and resumes from `Last-Event-ID`; a re-fetch takes the event's metadata as `flagConfigEtag` and
// `flagConfigLastModified`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { conformsTo, modelVersion } from "../ofrep-model.mjs";
import { startStack, until } from "../stack.mjs";

const FLAG = "streamed-banner";
const STATE = "/api/v1/environments/production/flags";

const bulkAnswer = conformsTo("BulkEvaluationSuccessResponse");
const streamEvent = conformsTo("EventStreamMessage");
const refetchMetadata = conformsTo("BulkEvaluationRefetchMetadata");

let stack;
let clientToken;

before(async () => {
  stack = await startStack();
  const flag = { key: FLAG, type: "boolean", variants: { on: true, off: false }, off_variant: "off", client_visible: true };
  assert.equal((await stack.api("POST", "/api/v1/flags", flag)).status, 201);
  const on = { enabled: true, fallthrough: { variant: "on" }, reason: "on for every visitor" };
  assert.equal((await stack.api("PUT", `${STATE}/${FLAG}`, on)).status, 200);
  clientToken = (await stack.api("POST", "/api/v1/tokens", { name: "web-app", scope: "client", environment: "production" })).body.token;
  await until(async () => (await bulk(stack.edge, clientToken)).response.status === 200, 10000, "the edge to know the client token");
});

after(async () => {
  await stack?.stop();
});

/** Reads server-sent events from `response` as they come: each as its fields (id, event, data). */
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

async function bulk(base, token, { query = "", headers = {} } = {}) {
  const response = await fetch(`${base}/ofrep/v1/evaluate/flags${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ context: { targetingKey: "visitor-1" } }),
  });
  const text = await response.text();
  return { response, body: text ? JSON.parse(text) : undefined };
}

/** An event as OFREP defines it: its data conforms to the model and asks for a re-fetch. */
function refetchEvaluation(event) {
  assert.equal(event.event ?? "message", "message", "a default SSE event, which EventSource's onmessage hears");
  assert.ok(event.id, "every event has an id, for Last-Event-ID");
  const message = JSON.parse(event.data);
  assert.deepEqual(streamEvent(message), [], `the event conforms to ofrep-core ${modelVersion}`);
  assert.equal(message.type, "refetchEvaluation");
  assert.equal(typeof message.etag, "string");
  return message;
}

/** The query a provider sends after `message`: its metadata, as the model names it. */
function refetchQuery(message) {
  const metadata = { flagConfigEtag: message.etag };
  if (message.lastModified !== undefined) metadata.flagConfigLastModified = message.lastModified;
  assert.deepEqual(refetchMetadata(metadata), []);
  return `?${new URLSearchParams(metadata)}`;
}

for (const [server, baseOf] of [["edge", () => stack.edge], ["control plane", () => stack.controlPlane]]) {
  describe(`the ${server}'s OFREP event stream`, () => {
    test("is advertised in bulk answers, for read and client tokens, in OFREP's shape", async () => {
      const base = baseOf();
      for (const token of [clientToken, stack.appToken]) {
        const { response, body } = await bulk(base, token);
        assert.equal(response.status, 200);
        assert.deepEqual(bulkAnswer(body), [], `the answer conforms to ofrep-core ${modelVersion}`);
        assert.equal(body.eventStreams.length, 1);
        const [stream] = body.eventStreams;
        assert.equal(stream.type, "sse");
        assert.ok(Number.isInteger(stream.inactivityDelaySec) && stream.inactivityDelaySec > 0);
        assert.equal(new URL(stream.url).origin, base);
        assert.ok(!stream.url.includes(token), "the URL carries a stream key, never the token");
        // Not modified: no body at all, as the model's BulkEvaluationNotModifiedResponse.
        const again = await bulk(base, token, { headers: { "if-none-match": response.headers.get("etag") } });
        assert.equal(again.response.status, 304);
        assert.equal(again.body, undefined);
      }
      const { body } = await bulk(base, clientToken);
      assert.deepEqual(body.flags.map((flag) => flag.key), [FLAG], "a client token sees its flags only");
    });

    test("sends refetchEvaluation with the new etag on every change, resumes, and takes the event's metadata", async () => {
      const base = baseOf();
      const url = (await bulk(base, clientToken)).body.eventStreams[0].url;
      const live = await fetch(url);
      assert.equal(live.status, 200);
      assert.match(live.headers.get("content-type"), /^text\/event-stream/);
      const next = eventReader(live);
      // A new stream hears of the current configuration at once.
      const current = await next();
      const currentMessage = refetchEvaluation(current);

      // Resumed from the current one: nothing until the next change, then that change.
      const resumed = eventReader(await fetch(url, { headers: { "last-event-id": current.id } }));
      assert.equal((await stack.api("POST", `${STATE}/${FLAG}/kill`, { reason: "stream test" })).status, 200);
      const killed = await next();
      const killedMessage = refetchEvaluation(killed);
      assert.notEqual(killed.id, current.id);
      assert.notEqual(killedMessage.etag, currentMessage.etag);
      assert.deepEqual(await resumed(), killed);

      // The re-fetch names the configuration the event announced, and gets it.
      const refetched = await bulk(base, clientToken, { query: refetchQuery(killedMessage) });
      assert.equal(refetched.response.status, 200);
      assert.deepEqual(bulkAnswer(refetched.body), []);
      assert.deepEqual([refetched.body.flags[0].value, refetched.body.flags[0].reason], [false, "DISABLED"]);
      // A last-modified time is taken too, in either of the model's forms.
      for (const lastModified of [0, "Thu, 03 Dec 2026 18:00:00 GMT"]) {
        const query = refetchQuery({ ...killedMessage, lastModified });
        assert.equal((await bulk(base, clientToken, { query })).response.status, 200);
      }

      assert.equal((await stack.api("POST", `${STATE}/${FLAG}/unkill`, { reason: "stream test over" })).status, 200);
      const restored = await next();
      refetchEvaluation(restored);
      assert.deepEqual(await resumed(), restored);
      // A client that missed both changes hears once, of the newest.
      const behind = eventReader(await fetch(url, { headers: { "last-event-id": current.id } }));
      assert.deepEqual(await behind(), restored);
      for (const reader of [next, resumed, behind]) await reader.cancel();
    });

    test("ends a stream when its token is deleted", async () => {
      const base = baseOf();
      const name = `short-lived-page-${server.replace(" ", "-")}`;
      const created = await stack.api("POST", "/api/v1/tokens", { name, scope: "client", environment: "production" });
      await until(async () => (await bulk(base, created.body.token)).response.status === 200, 10000, `the ${server} to know the token`);
      const url = (await bulk(base, created.body.token)).body.eventStreams[0].url;
      const next = eventReader(await fetch(url));
      refetchEvaluation(await next()); // the current configuration
      assert.equal((await stack.api("DELETE", `/api/v1/tokens/${name}`)).status, 204);
      await assert.rejects(next(), /the event stream ended/);
      assert.equal((await fetch(url)).status, 401);
    });

    test("refuses a made-up stream key and a missing one", async () => {
      const url = new URL((await bulk(baseOf(), clientToken)).body.eventStreams[0].url);
      url.searchParams.set("token", "0".repeat(64));
      assert.equal((await fetch(url)).status, 401);
      url.searchParams.delete("token");
      assert.equal((await fetch(url)).status, 401);
    });
  });
}
