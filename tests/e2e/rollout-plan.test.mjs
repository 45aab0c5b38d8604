// A rollout plan across the whole system: the canary at 25%, the edge reporting its evaluation
// counts, an app reporting an error spike, and the guardrail killing the flag everywhere, with
// the rollback message at a local webhook receiver.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { checkoutAtEdge } from "./fixtures.mjs";
import { startStack, until } from "../stack.mjs";

/** A webhook receiver on loopback; `messages` fills as payloads arrive. */
async function receiver() {
  const messages = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      messages.push(JSON.parse(body));
      response.writeHead(200).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}/hook`, messages, close: () => server.close() };
}

test("an error spike at 25% kills the flag at the edge, logged as the guardrail's decision", async () => {
  const stack = await startStack({ edgeBindings: { METRICS_INTERVAL_SECONDS: "1" } });
  const hook = await receiver();
  try {
    const created = await stack.api("POST", "/api/v1/webhooks", { name: "releases", url: hook.url, environment: "production" });
    assert.equal(created.status, 201);
    const started = await stack.api("POST", "/api/v1/plans",
      { flag: "checkout-v2", environment: "production", template: "canary", rationale: "end-to-end test" });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const id = started.body.plan.id;
    for (const rationale of ["assessed early for the test", "expanding for the test"]) {
      const advanced = await stack.api("POST", `/api/v1/plans/${id}/advance`, { rationale });
      assert.equal(advanced.status, 200, JSON.stringify(advanced.body));
    }
    assert.equal(advanced(await stack.api("GET", `/api/v1/plans/${id}`)), "expanded");

    // The edge serves 25% and reports what it served.
    const users = Array.from({ length: 400 }, (_, i) => `user-${i}`);
    const answers = await until(async () => {
      const answers = await Promise.all(users.map((user) => checkoutAtEdge(stack, user)));
      return answers.every((a) => a.reason === "SPLIT") && answers;
    }, 5000, "the 25% rollout at the edge");
    const exposed = answers.filter((a) => a.variant === "on").length;
    assert.ok(exposed > 60 && exposed < 140, `about 25% of 400, got ${exposed}`);
    const sums = await until(async () => {
      await checkoutAtEdge(stack, "user-0"); // traffic, so the edge's next report falls due
      const sums = (await stack.api("GET", "/api/v1/environments/production/metrics?flag=checkout-v2")).body;
      const counted = (sums.variants.on?.evaluations ?? 0) + (sums.variants.off?.evaluations ?? 0);
      return counted >= users.length && sums;
    }, 10000, "the edge's evaluation counts at the control plane");
    assert.ok(sums.variants.on.evaluations >= exposed);

    // The app reports: first healthy, for both variants, then 40% errors on `on`.
    const report = (requests, errors, control = []) => stack.api("POST", "/api/v1/environments/production/metrics",
      { counters: [{ flag: "checkout-v2", variant: "on", counts: { requests, errors } }, ...control] }, stack.appToken);
    assert.equal((await report(2000, 10, [{ flag: "checkout-v2", variant: "off", counts: { requests: 6000, errors: 30 } }])).status, 202);
    assert.equal(advanced(await stack.api("GET", `/api/v1/plans/${id}`)), "expanded");
    const spikeAt = Date.now();
    assert.equal((await report(1000, 400)).status, 202);

    const killed = await until(async () => {
      const answer = await checkoutAtEdge(stack, "user-1");
      return answer.reason === "DISABLED" && answer;
    }, 5000, "the edge to serve the kill");
    assert.equal(killed.variant, "off");
    console.log(`error spike reported → edge answers DISABLED: ${Date.now() - spikeAt} ms`);

    const plan = (await stack.api("GET", `/api/v1/plans/${id}`)).body;
    assert.equal(plan.status, "rolled_back");
    const decisions = (await stack.api("GET", "/api/v1/decisions?flag=checkout-v2&env=production")).body;
    const last = decisions.at(-1);
    assert.deepEqual([last.decided_by, last.decision, last.from_stage], ["guardrail", "rollback", "expanded"]);
    assert.deepEqual([last.metrics[0].variant.metric, last.metrics[0].variant.per], [410, 3000]);
    // The canary's default guardrail: a significant rise of more than half a point over `off`.
    assert.match(last.rationale, /errors\/requests <= control \+ 0\.5 points \(95% sequential\) \(rose 13\.17 points over control/);

    const rollback = await until(async () => hook.messages.find((m) => m.text.startsWith("🔄 Rollback Initiated")),
      10000, "the rollback message at the webhook");
    assert.match(rollback.text, /we're rolling back `checkout-v2` in production/);
    assert.equal(rollback.rollgate.decided_by, "guardrail");
    assert.ok(hook.messages.some((m) => m.text.startsWith("⚠️ Release Issue Detected")));
    assert.ok(hook.messages.some((m) => m.text.startsWith("🚀 `checkout-v2` Canary Rollout Starting")));
  } finally {
    hook.close();
    await stack.stop();
  }
});

function advanced(response) {
  const plan = response.body;
  return plan.stages[plan.stage].name;
}
