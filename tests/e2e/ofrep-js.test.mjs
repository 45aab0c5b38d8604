// The npm OpenFeature server SDK with the OFREP provider, evaluating through the edge, must
// give flag-core's native answers, as the control plane's own OFREP endpoint computes them.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { OFREPProvider } from "@openfeature/ofrep-provider";
import { OpenFeature } from "@openfeature/server-sdk";

import { startStack, until } from "../stack.mjs";
import { FLAGS, contexts, createFlags } from "./fixtures.mjs";

let stack;

before(async () => {
  stack = await startStack();
  await createFlags(stack.api);
  await until(async () => (await stack.api("GET", "/api/v1/edges")).body.every((e) => e.lag === 0), 10000, "the edge");
  await OpenFeature.setProviderAndWait(
    new OFREPProvider({ baseUrl: stack.edge, headers: [["X-API-Key", stack.appToken]] }),
  );
});

after(async () => {
  await OpenFeature.close();
  await stack.stop();
});

/** The control plane's native answer, in OpenFeature's terms. */
async function native(flag, context) {
  const response = await fetch(`${stack.controlPlane}/api/v1/environments/production/ofrep/v1/evaluate/flags/${flag}`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.appToken}`, "content-type": "application/json" },
    body: JSON.stringify({ context }),
  });
  return response.json();
}

const getters = {
  boolean: (client, ...args) => client.getBooleanDetails(...args),
  string: (client, ...args) => client.getStringDetails(...args),
  number: (client, ...args) => client.getNumberDetails(...args),
  object: (client, ...args) => client.getObjectDetails(...args),
};

test("the OFREP provider through the edge gives flag-core's answers for 1,000 contexts", async () => {
  const client = OpenFeature.getClient();
  const seen = new Set();
  let evaluations = 0;
  for (const context of contexts(1000)) {
    for (const [flag, type, fallback] of FLAGS) {
      const { targetingKey, ...attributes } = context;
      const details = await getters[type](client, flag, fallback, { ...attributes, ...(targetingKey ? { targetingKey } : {}) });
      const expected = await native(flag, context);
      if (expected.errorCode) {
        assert.equal(details.errorCode, expected.errorCode, `${flag} ${JSON.stringify(context)}`);
        assert.deepEqual(details.value, fallback);
      } else {
        assert.deepEqual(
          { value: details.value, variant: details.variant, reason: details.reason, metadata: details.flagMetadata },
          { value: expected.value, variant: expected.variant, reason: expected.reason, metadata: expected.metadata ?? {} },
          `${flag} ${JSON.stringify(context)}`,
        );
      }
      const outcome = expected.metadata?.prerequisiteFailed ? "PREREQUISITE_FAILED" : expected.reason;
      seen.add(`${flag}:${expected.errorCode ?? outcome}`);
      evaluations += 1;
    }
  }
  assert.equal(evaluations, 4000);
  // The contexts reach every path: rule matches, splits, defaults, prerequisites, missing keys.
  for (const outcome of ["banner:TARGETING_MATCH", "banner:SPLIT", "banner:DEFAULT", "checkout-v2:SPLIT",
    "search-limit:SPLIT", "new-checkout-theme:PREREQUISITE_FAILED", "new-checkout-theme:DEFAULT", "checkout-v2:TARGETING_KEY_MISSING"]) {
    assert.ok(seen.has(outcome), `no context reached ${outcome}: ${[...seen].join(", ")}`);
  }
});

test("a kill at the control plane reaches the OFREP client through the edge", async () => {
  const client = OpenFeature.getClient();
  const killed = await stack.api("POST", "/api/v1/environments/production/flags/checkout-v2/kill", { reason: "e2e kill" });
  assert.equal(killed.status, 200);
  const details = await until(async () => {
    const details = await client.getBooleanDetails("checkout-v2", true, { targetingKey: "user-1" });
    return details.reason === "DISABLED" && details;
  }, 5000, "the edge to answer DISABLED");
  assert.equal(details.value, false);
  assert.equal(details.variant, "off");
});
