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
// Decided by a rule for pro plans, else by a rollout: an answer with `ruleIndex`, and without a
// targetingKey a failure entry.
const SPLIT_FLAG = "streamed-split";
const STATE = "/api/v1/environments/production/flags";
// A reader waits for its next event: a server that never sends one fails the test, not CI.
const PATIENCE = { timeout: 30000 };

const bulkAnswer = conformsTo("BulkEvaluationSuccessResponse");
const flagAnswer = conformsTo("EvaluationSuccessResponse");
const flagFailure = conformsTo("EvaluationFailureResponse");
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
  const split = { key: SPLIT_FLAG, type: "string", variants: { a: "A", b: "B" }, off_variant: "a" };
  assert.equal((await stack.api("POST", "/api/v1/flags", split)).status, 201);
  const rules = {
    enabled: true,
    rules: [{ conditions: [{ attribute: "plan", op: "eq", values: ["pro"] }], serve: { variant: "b" } }],
    fallthrough: { rollout: { percent: 50000, inside: "b", outside: "a" } },
    reason: "pro plans first",
  };
  assert.equal((await stack.api("PUT", `${STATE}/${SPLIT_FLAG}`, rules)).status, 200);
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

async function bulk(base, token, { query = "", headers = {}, context = { targetingKey: "visitor-1" } } = {}) {
  const response = await fetch(`${base}/ofrep/v1/evaluate/flags${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ context }),
  });
  const text = await response.text();
  return { response, text, body: text ? JSON.parse(text) : undefined };
}

/** Violations of the model in a bulk answer, each flag entry held to its own branch. */
function bulkViolations(body) {
  const entries = (body.flags ?? []).flatMap((entry, index) =>
    ("errorCode" in entry ? flagFailure : flagAnswer)(entry).map((violation) => `flags[${index}]${violation}`),
  );
  return [...bulkAnswer(body), ...entries];
}

/** An event as OFREP defines it: its data conforms to the model and asks for a re-fetch. */
function refetchEvaluation(event) {
  assert.equal(event.event ?? "message", "message", "a default SSE event, which EventSource's onmessage hears");
  assert.ok(event.id, "every event has an id, for Last-Event-ID");
  const message = JSON.parse(event.data);
  assert.deepEqual(streamEvent(message), [], `the event conforms to ofrep-core ${modelVersion}`);
  assert.equal(message.type, "refetchEvaluation");
  // Both servers' etag names the event's configuration, the form their flagConfigEtag reads.
  assert.equal(message.etag, `"${event.id}"`);
  return message;
}

/** The query a provider sends after `message`: its metadata, under the model's names. */
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
        assert.deepEqual(bulkViolations(body), [], `the answer conforms to ofrep-core ${modelVersion}`);
        assert.ok(Array.isArray(body.flags), "the web provider refuses an answer without flags");
        assert.equal(body.eventStreams.length, 1);
        const [stream] = body.eventStreams;
        assert.equal(stream.type, "sse");
        assert.ok(!("endpoint" in stream), "OFREP takes a url or an endpoint, never both");
        assert.ok(Number.isInteger(stream.inactivityDelaySec) && stream.inactivityDelaySec >= 1);
        assert.equal(new URL(stream.url).origin, base);
        assert.ok(!stream.url.includes(token), "the URL carries a stream key, never the token");
        // Not modified: the same ETag and no body (the model's BulkEvaluationNotModifiedResponse).
        const etag = response.headers.get("etag");
        const again = await bulk(base, token, { headers: { "if-none-match": etag } });
        assert.equal(again.response.status, 304);
        assert.equal(again.response.headers.get("etag"), etag);
        assert.equal(again.response.headers.get("content-type"), null);
        assert.equal(again.text, "");
      }
      const { body } = await bulk(base, clientToken);
      assert.deepEqual(body.flags.map((flag) => flag.key), [FLAG], "a client token sees its flags only");
      // A rule's answer carries Rollgate's ruleIndex; without a key, a rollout answers a failure.
      for (const context of [{ targetingKey: "visitor-1", plan: "pro" }, { plan: "free" }]) {
        const answer = await bulk(base, stack.appToken, { context });
        assert.equal(answer.response.status, 200);
        assert.deepEqual(bulkViolations(answer.body), [], JSON.stringify(context));
      }
      const decided = (await bulk(base, stack.appToken, { context: { targetingKey: "visitor-1", plan: "pro" } })).body;
      assert.deepEqual(decided.flags.find((flag) => flag.key === SPLIT_FLAG), { key: SPLIT_FLAG, value: "B", variant: "b", reason: "TARGETING_MATCH", ruleIndex: 0 });
      const keyless = (await bulk(base, stack.appToken, { context: { plan: "free" } })).body;
      assert.equal(keyless.flags.find((flag) => flag.key === SPLIT_FLAG).errorCode, "TARGETING_KEY_MISSING");
    });

    test("sends refetchEvaluation with the new etag on every change, resumes, and takes the event's metadata", PATIENCE, async () => {
      const base = baseOf();
      const before = await bulk(base, clientToken);
      const url = before.body.eventStreams[0].url;
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

      // The re-fetch names the configuration the event announced, as the web provider sends it
      // (with the ETag it holds), and gets it.
      const beforeEtag = before.response.headers.get("etag");
      const refetched = await bulk(base, clientToken, { query: refetchQuery(killedMessage), headers: { "if-none-match": beforeEtag } });
      assert.equal(refetched.response.status, 200);
      assert.notEqual(refetched.response.headers.get("etag"), beforeEtag);
      assert.deepEqual(bulkViolations(refetched.body), []);
      assert.deepEqual([refetched.body.flags[0].value, refetched.body.flags[0].reason], [false, "DISABLED"]);
      // A last-modified time is taken too, in either of OFREP's forms: Unix seconds or ISO 8601.
      for (const lastModified of [1796320800, "2026-12-03T18:00:00Z"]) {
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

    test("ends a stream when its token is deleted", PATIENCE, async () => {
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
