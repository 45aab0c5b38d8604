// The in-process providers against the real control plane, through OpenFeature: answers equal
// to the control plane's OFREP answers, faults (the control plane killed with -9 and restarted,
// an app restarted with only its saved snapshot), and counts that reach a rollout plan.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { contexts, createFlags } from "./fixtures.mjs";
import { startNodeProvider, startRustProvider } from "../providers.mjs";
import { freePort, startControlPlane, startStack, until } from "../stack.mjs";

const spec = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "flag-core", "tests", "spec");
const fixtures = readdirSync(spec).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(readFileSync(join(spec, f), "utf8")));

async function call(base, token, method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const answer = { status: response.status, body: text ? JSON.parse(text) : null };
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return answer;
}

/** Every flag's OFREP answer for `context`, by key, in the probes' shape. */
async function bulk(base, token, context) {
  const { body } = await call(base, token, "POST", "/ofrep/v1/evaluate/flags", { context });
  return Object.fromEntries(body.flags.map((f) => [f.key, shape(f)]));
}

/** What both sides are compared on. */
function shape(answer) {
  const metadata = answer.metadata ?? {};
  return {
    value: answer.value ?? null,
    variant: answer.variant ?? null,
    reason: answer.reason,
    errorCode: answer.errorCode ?? null,
    ruleIndex: answer.ruleIndex ?? metadata.ruleIndex ?? null,
    prerequisiteFailed: metadata.prerequisiteFailed ?? false,
  };
}

/** The spec fixtures' contexts, again with many other targeting keys, some attributes left out. */
function specContexts(count) {
  const cases = fixtures.flatMap((f) => f.cases.map((c) => c.context ?? {}));
  return Array.from({ length: count }, (_, i) => {
    const context = { ...cases[i % cases.length] };
    if (i % 3 !== 0) context.targetingKey = `user-${i}`;
    const names = Object.keys(context).filter((n) => n !== "targetingKey");
    if (i % 5 === 0 && names.length) delete context[names[i % names.length]];
    return context;
  });
}

/** Compares the provider with OFREP over `contexts`; returns the number of answers compared. */
async function compare(provider, base, token, contexts) {
  const { body: snapshot } = await call(base, token, "GET", "/api/v1/environments/production/snapshot");
  let compared = 0;
  const mismatches = [];
  for (let i = 0; i < contexts.length; i += 50) {
    await Promise.all(contexts.slice(i, i + 50).map(async (context) => {
      const expected = await bulk(base, token, context);
      for (const flag of snapshot.flags) {
        const actual = shape(await provider.evaluate(flag.key, flag.type, context));
        compared += 1;
        if (JSON.stringify(actual) !== JSON.stringify(expected[flag.key])) {
          mismatches.push({ flag: flag.key, context, actual, expected: expected[flag.key] });
        }
      }
    }));
  }
  assert.deepEqual(mismatches.slice(0, 5), [], `${mismatches.length} of ${compared} answers differ`);
  return compared;
}

const PROVIDERS = [["Rust", startRustProvider], ["Node", startNodeProvider]];

for (const [name, startProvider] of PROVIDERS) {
  test(`the ${name} provider answers as the control plane's OFREP does, over the demo flags and the spec fixtures`, async () => {
    // The demo flags, in a stack like README's.
    const stack = await startStack();
    try {
      await createFlags(stack.api);
      const provider = await startProvider({ url: stack.controlPlane, token: stack.appToken });
      try {
        const version = (await stack.api("GET", "/api/v1/environments/production/snapshot")).body.version;
        await until(async () => provider.events.some((e) => e.version === version), 10000, "the provider to have the last version");
        const compared = await compare(provider, stack.controlPlane, stack.appToken, contexts(10000));
        console.log(`${name} provider, demo flags: ${compared} answers equal over 10000 contexts`);
      } finally {
        await provider.stop();
      }
    } finally {
      await stack.stop();
    }

    // The spec fixtures, loaded through the API into a control plane of their own.
    const adminToken = "rg_admin_providers_equality_0123456789";
    const server = await startControlPlane({ db: join(mkdtempSync(join(tmpdir(), "rollgate-spec-")), "r.db"), adminToken });
    try {
      for (const { snapshot } of fixtures) {
        for (const segment of snapshot.segments ?? []) await call(server.url, adminToken, "POST", "/api/v1/segments", segment);
        for (const flag of snapshot.flags) {
          const { key, type, variants, off_variant, salt } = flag;
          await call(server.url, adminToken, "POST", "/api/v1/flags", { key, type, variants, off_variant, ...(salt ? { salt } : {}) });
        }
        for (const flag of snapshot.flags) {
          const { enabled = true, prerequisites = [], rules = [], fallthrough } = flag;
          await call(server.url, adminToken, "PUT", `/api/v1/environments/production/flags/${flag.key}`, { enabled, prerequisites, rules, fallthrough });
        }
      }
      const { body: { token } } = await call(server.url, adminToken, "POST", "/api/v1/tokens", { name: "app", scope: "read", environment: "production" });
      const provider = await startProvider({ url: server.url, token });
      try {
        const version = (await call(server.url, token, "GET", "/api/v1/environments/production/snapshot")).body.version;
        await until(async () => provider.events.some((e) => e.version === version), 10000, "the provider to have the last version");
        const compared = await compare(provider, server.url, token, specContexts(10000));
        console.log(`${name} provider, spec fixtures: ${compared} answers equal over 10000 contexts`);
      } finally {
        await provider.stop();
      }
    } finally {
      await server.kill();
    }
  });

  test(`the ${name} provider keeps answering through a crash of the control plane, and an app restart`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "rollgate-faults-"));
    const db = join(dir, "rollgate.db");
    const port = await freePort();
    const adminToken = "rg_admin_providers_faults_0123456789ab";
    let server = await startControlPlane({ db, port, demo: true, adminToken });
    const { body: { token } } = await call(server.url, adminToken, "POST", "/api/v1/tokens", { name: "app", scope: "read", environment: "production" });
    const saved = join(dir, "flags.json");
    const rollout = (percent) => call(server.url, adminToken, "PUT", "/api/v1/environments/production/flags/checkout-v2/rollout", { percent, reason: "test" });
    let provider = await startProvider({ url: server.url, token, saveTo: saved });
    try {
      await rollout(50);
      const user = { targetingKey: "user-7" };
      const before = await until(async () => {
        const answer = await provider.evaluate("checkout-v2", "boolean", user);
        return answer.reason === "SPLIT" && answer;
      }, 10000, "the 50% rollout in the provider");

      // Killed with -9: the provider says STALE and answers as before.
      const mark = provider.events.length;
      await server.kill("SIGKILL");
      await provider.next("PROVIDER_STALE", { after: mark });
      assert.deepEqual(await provider.evaluate("checkout-v2", "boolean", user), before);

      // Restarted: READY by itself, then each new version, with no gap.
      server = await startControlPlane({ db, port, adminToken });
      const ready = await provider.next("PROVIDER_READY", { after: mark });
      const { body: changed } = await rollout(100);
      const arrived = await provider.next("PROVIDER_CONFIGURATION_CHANGED", { after: mark, test: (e) => e.version === changed.version });
      assert.deepEqual(arrived.flagsChanged, ["checkout-v2"]);
      assert.equal(ready.version, changed.version - 1, "READY with the version it had, which was current");
      assert.equal((await provider.evaluate("checkout-v2", "boolean", user)).value, true);

      // The app restarts while the control plane is down: it serves the snapshot it saved.
      await provider.stop();
      await server.kill("SIGKILL");
      provider = await startProvider({ url: server.url, token, bootstrap: saved });
      assert.deepEqual(await provider.evaluate("checkout-v2", "boolean", user),
        { value: true, variant: "on", reason: "SPLIT", metadata: {} });
    } finally {
      await provider.kill();
      await server.kill();
    }
  });

  test(`counts from the ${name} provider's evaluations reach a rollout plan's guardrail, which rolls it back`, async () => {
    const stack = await startStack();
    const provider = await startProvider({ url: stack.controlPlane, token: stack.appToken, metricsMs: 200 });
    try {
      const started = await stack.api("POST", "/api/v1/plans",
        { flag: "checkout-v2", environment: "production", template: "canary", rationale: "in-process test" });
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const id = started.body.plan.id;
      await provider.next("PROVIDER_CONFIGURATION_CHANGED", { test: (e) => e.flagsChanged.includes("checkout-v2") });

      // The app evaluates for 2,000 users, each making 20 requests, and reports requests and
      // errors per served variant through the provider: healthy on the control, 30% errors on
      // the canary.
      const served = { on: 0, off: 0 };
      for (let i = 0; i < 2000; i++) {
        const answer = await provider.evaluate("checkout-v2", "boolean", { targetingKey: `user-${i}` });
        served[answer.variant] += 1;
        await provider.track("checkout-v2", answer.variant, "requests", 20);
        if (answer.variant === "on" && i % 10 < 3) await provider.track("checkout-v2", "on", "errors", 20);
      }
      assert.ok(served.on > 40 && served.on < 170, `about 5% of 2000 on, got ${served.on}`);
      await provider.flush();
      const sums = (await stack.api("GET", "/api/v1/environments/production/metrics?flag=checkout-v2")).body;
      assert.equal(sums.variants.on.evaluations, served.on);
      assert.equal(sums.variants.off.evaluations, served.off);

      const plan = await until(async () => {
        const plan = (await stack.api("GET", `/api/v1/plans/${id}`)).body;
        return plan.status === "rolled_back" && plan;
      }, 15000, "the guardrail to roll the plan back");
      assert.equal(plan.status, "rolled_back");
      const last = (await stack.api("GET", `/api/v1/decisions?plan=${id}&order=newest&limit=1`)).body[0];
      assert.deepEqual([last.decided_by, last.decision], ["guardrail", "rollback"]);
      // And the provider serves the rollback.
      await until(async () => (await provider.evaluate("checkout-v2", "boolean", { targetingKey: "user-1" })).reason === "DISABLED",
        10000, "the provider to serve the kill");
    } finally {
      await provider.kill();
      await stack.stop();
    }
  });
}
