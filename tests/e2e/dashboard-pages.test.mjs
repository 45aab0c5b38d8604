// The dashboard as a flag manager, in headless Chromium: a flag's page (metadata, readable rules,
// a rolled-back plan with its reason, a guardrail chart that fills as metrics arrive, history),
// creating a flag (and a refused one, the error at its field), the rule editor (a segment, a
// condition, a weighted split; refusals at their fields), segments (pasted, then edited),
// tokens (shown once, deleted) and settings. Every page is checked with axe-core: no serious or
// critical accessibility violations. Screenshots go to tests/artifacts/.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { createFlags, launchChromium } from "./fixtures.mjs";
import { startStack } from "../stack.mjs";

const artifacts = process.env.ROLLGATE_ARTIFACTS ?? join(dirname(fileURLToPath(import.meta.url)), "..", "artifacts");
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

/** Serious and critical axe-core violations on the page as it is now. */
async function accessibilityProblems(page) {
  await page.addScriptTag({ path: axePath });
  const results = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

test("flag pages, creating a flag and tokens in the dashboard", async () => {
  mkdirSync(artifacts, { recursive: true });
  const stack = await startStack();
  const browser = await launchChromium();
  try {
    await createFlags(stack.api);
    // A plan rolled back, whose timeline and reason the flag's page keeps.
    // A fixed bound, whose chart is the two rates and the limit (sequential ones have their
    // own test, guardrail-chart.test.mjs).
    const started = await stack.api("POST", "/api/v1/plans", { flag: "banner", environment: "production",
      template: "canary", parameters: { guardrails: [{ metric: "errors", max: 0.02 }] }, rationale: "new greeting" });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const reported = await stack.api("POST", "/api/v1/environments/production/metrics", { counters: [
      { flag: "banner", variant: "new", counts: { requests: 1800, errors: 9 } },
      { flag: "banner", variant: "old", counts: { requests: 2000, errors: 4 } },
    ] }, stack.appToken);
    assert.equal(reported.status, 202, JSON.stringify(reported.body));
    const rolledBack = await stack.api("POST", `/api/v1/plans/${started.body.plan.id}/rollback`,
      { rationale: "copy reads badly in German", to: "kill" });
    assert.equal(rolledBack.status, 200, JSON.stringify(rolledBack.body));

    // axe-core is injected as a script, which the dashboard's Content-Security-Policy forbids.
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
    const problems = [];
    page.on("pageerror", (error) => problems.push(error.message));
    await page.goto(stack.controlPlane);
    assert.deepEqual(await accessibilityProblems(page), [], "the login page");
    await page.fill("#token", stack.adminToken);
    await page.click("#login button[type=submit]");
    await page.locator('#flags tr[data-flag="banner"]').waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "the board");

    // A flag's page: clicking its name opens it.
    await page.click('#flags a[href="#/flags/banner"]');
    // The title is set once the whole page is rendered.
    await page.locator("#flag-title", { hasText: "banner" }).waitFor();
    const states = await page.locator("#flag-states").textContent();
    assert.match(states, /if country in SE, NO → new/);
    assert.match(states, /if in segment beta-customers → 50% new, the rest old/);
    const plans = await page.locator("#flag-plans").textContent();
    assert.match(plans, /rolled back/);
    assert.match(plans, /rollback by admin: copy reads badly in German/);
    assert.match(await page.locator("#flag-audit").textContent(), /flag\.kill/);
    // Each guardrail as a chart: the variant and the control since the plan started, and the limit.
    const chart = page.locator('#flag-charts figure[data-guardrail="errors/requests"][data-environment="production"]');
    assert.match(await chart.locator("figcaption").textContent(), /variant new: 0\.50%.*control old: 0\.20%.*limit 2\.00%/s);
    assert.equal(await chart.locator("polyline.variant").count(), 1);
    assert.equal(await chart.locator("polyline.control").count(), 1);
    assert.equal(await chart.locator("line.limit").count(), 1);
    // The chart fills as metrics arrive, without a reload: 50 errors in 2,000 requests now.
    const more = await stack.api("POST", "/api/v1/environments/production/metrics", { counters: [
      { flag: "banner", variant: "new", counts: { requests: 200, errors: 41 } },
    ] }, stack.appToken);
    assert.equal(more.status, 202, JSON.stringify(more.body));
    await chart.locator("figcaption", { hasText: "variant new: 2.50%" }).waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "a flag's page");
    await page.screenshot({ path: join(artifacts, "dashboard-flag-page.png"), fullPage: true });

    // Starting a plan from a flag's page: checkout-v2 is at 25%, so the canary's 5% is refused
    // with the stage to start at, and starting there works.
    await page.goto(`${stack.controlPlane}/#/flags/checkout-v2`);
    await page.locator("#flag-title", { hasText: "checkout-v2" }).waitFor();
    const start = page.locator('form.start-plan[data-environment="production"]');
    await start.waitFor();
    await start.locator('[name="reason"]').fill("QA passed");
    await start.locator('button[type="submit"]').click();
    await page.locator("#toast .error", { hasText: "start at stage `expanded` (25%)" }).waitFor();
    await start.locator('[name="start_at"]').selectOption("expanded");
    await start.locator('[name="reason"]').fill("QA passed");
    await start.locator('button[type="submit"]').click();
    await page.locator("#flag-plans .plan", { hasText: "running" }).waitFor();
    assert.match(await page.locator("#flag-plans .stage.current").textContent(), /expanded/);

    // Creating a flag: a refused one shows why at its field, then a good one opens its page.
    await page.click('nav a[href="#/new-flag"]');
    await page.locator("#new-flag").waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "the new-flag form");
    await page.fill('#new-flag [name="key"]', "promo-banner");
    await page.selectOption('#new-flag [name="type"]', "string");
    await page.fill('#new-flag [name="variants"]', "plain=Hello\nfestive=\"Happy holidays\"");
    await page.fill('#new-flag [name="off_variant"]', "plain");
    await page.click('#new-flag button[type="submit"]');
    await page.locator("#new-flag-error", { hasText: "the value of plain is not JSON" }).waitFor();
    assert.equal(await page.locator('#new-flag [name="variants"]').getAttribute("class"), "field-error");
    await page.fill('#new-flag [name="variants"]', "plain=\"Hello\"\nfestive=true");
    await page.click('#new-flag button[type="submit"]');
    await page.locator("#new-flag-error", { hasText: "variants.festive" }).waitFor();
    assert.equal((await stack.api("GET", "/api/v1/flags/promo-banner")).status, 404, "nothing stored");
    await page.fill('#new-flag [name="variants"]', "plain=\"Hello\"\nfestive=\"Happy holidays\"");
    await page.fill('#new-flag [name="description"]', "The holiday banner");
    await page.fill('#new-flag [name="owner"]', "growth");
    await page.fill('#new-flag [name="tags"]', "ui, seasonal");
    await page.click('#new-flag button[type="submit"]');
    await page.locator("#flag-title", { hasText: "promo-banner" }).waitFor();
    assert.match(await page.locator("#flag-about").textContent(), /Owner: growth · Tags: ui, seasonal/);
    const created = (await stack.api("GET", "/api/v1/flags/promo-banner")).body;
    assert.deepEqual([created.description, created.owner, created.tags], ["The holiday banner", "growth", ["ui", "seasonal"]]);

    // Editing its definition: a variant more and another owner, with If-Match.
    await page.click("#edit-flag summary");
    await page.fill('#edit-flag [name="variants"]', "plain=\"Hello\"\nfestive=\"Happy holidays\"\nspring=\"Spring sale\"");
    await page.fill('#edit-flag [name="owner"]', "marketing");
    await page.check('#edit-flag [name="client_visible"]');
    await page.click('#edit-flag button[type="submit"]');
    await page.locator("#flag-about", { hasText: "Owner: marketing" }).waitFor();
    await page.locator("#flag-about", { hasText: "browsers may evaluate it" }).waitFor();
    const edited = (await stack.api("GET", "/api/v1/flags/promo-banner")).body;
    assert.deepEqual(Object.keys(edited.variants).sort(), ["festive", "plain", "spring"]);
    assert.equal(edited.client_visible, true);
    // Someone else changes it meanwhile: the save is refused, their change stands.
    await page.click("#edit-flag summary");
    const theirs = { ...edited, owner: "design" };
    for (const field of ["created_at", "updated_at", "environments"]) delete theirs[field];
    assert.equal((await stack.api("PUT", "/api/v1/flags/promo-banner", theirs)).status, 200);
    await page.fill('#edit-flag [name="owner"]', "growth");
    await page.click('#edit-flag button[type="submit"]');
    await page.locator("#edit-flag .error", { hasText: "Someone changed this flag since you opened it" }).waitFor();
    assert.equal((await stack.api("GET", "/api/v1/flags/promo-banner")).body.owner, "design");

    // The rule editor: a rule with a segment, a condition and a weighted split. flag-core's
    // refusals land on the field their path names, and nothing is stored until it compiles.
    // Reloaded, the page knows the flag's revision after the other person's change.
    await page.reload();
    await page.locator("#flag-title", { hasText: "promo-banner" }).waitFor();
    const openEditor = async () => {
      await page.locator("#flag-states details.edit-state", { has: page.locator('form[data-environment="production"]') })
        .locator("summary").click();
      return page.locator('form.rule-editor[data-environment="production"]');
    };
    const productionState = async () => (await stack.api("GET", "/api/v1/flags/promo-banner")).body.environments.production;
    let editor = await openEditor();
    await editor.locator('[data-action="add-rule"]').click();
    await editor.locator('input[type=checkbox][data-path="rules[0].segments"][value="beta-customers"]').check();
    await editor.locator('[data-path="rules[0].conditions[0].attribute"]').fill("orders");
    await editor.locator('[data-path="rules[0].conditions[0].op"]').selectOption("gte");
    await editor.locator('[data-path="rules[0].conditions[0].values"]').fill("many");
    await editor.locator('[data-path="rules[0].serve.kind"]').selectOption("weights");
    await editor.locator('[data-action="remove"][data-path="rules[0].serve.rollout.weights[0]"]').click();
    await editor.locator('[data-path="rules[0].serve.rollout.weights[0].variant"]').selectOption("festive");
    await editor.locator('[data-path="rules[0].serve.rollout.weights[1].variant"]').selectOption("spring");
    await editor.locator('[data-path="rules[0].serve.rollout.weights[0].weight"]').fill("30");
    await editor.locator('[data-path="rules[0].serve.rollout.weights[1].weight"]').fill("60");
    await editor.locator('[data-path="reason"]').fill("holiday copy for loyal customers");
    await editor.locator('button[type="submit"]').click();
    await editor.locator(".error", { hasText: "rules[0].conditions[0].values[0]" }).waitFor();
    assert.equal(await editor.locator('[data-path="rules[0].conditions[0].values"]').getAttribute("aria-invalid"), "true");
    await editor.locator('[data-path="rules[0].conditions[0].values"]').fill("3");
    await editor.locator('button[type="submit"]').click();
    await editor.locator(".error", { hasText: "rules[0].serve.rollout.weights" }).waitFor();
    assert.equal(await editor.locator('span[data-path="rules[0].serve.rollout.weights"]').textContent(), "total 90% of 100%");
    assert.equal(await editor.locator('span[data-path="rules[0].serve.rollout.weights"]').getAttribute("aria-invalid"), "true");
    assert.deepEqual((await productionState()).rules ?? [], [], "nothing stored while refused");
    await editor.locator('[data-path="rules[0].serve.rollout.weights[1].weight"]').fill("70");
    assert.deepEqual(await accessibilityProblems(page), [], "the rule editor");
    await page.locator("#flag-states").screenshot({ path: join(artifacts, "dashboard-rule-editor.png") });
    await editor.locator('button[type="submit"]').click();
    await page.locator("#flag-states", { hasText: "if in segment beta-customers and orders gte 3 → 30% festive, 70% spring" }).waitFor();
    assert.deepEqual((await productionState()).rules, [{ segments: ["beta-customers"],
      conditions: [{ attribute: "orders", op: "gte", values: [3] }],
      serve: { rollout: { weights: [{ variant: "festive", weight: 30000 }, { variant: "spring", weight: 70000 }] } } }]);
    // Editing it: a percentage that is not one is refused before sending; the condition goes.
    editor = await openEditor();
    assert.equal(await editor.locator('[data-path="rules[0].serve.rollout.weights[1].weight"]').inputValue(), "70");
    await editor.locator('[data-path="fallthrough.kind"]').selectOption("percent");
    await editor.locator('[data-path="fallthrough.rollout.percent"]').fill("150");
    await editor.locator('[data-path="fallthrough.rollout.inside"]').selectOption("festive");
    await editor.locator('[data-path="fallthrough.rollout.outside"]').selectOption("plain");
    await editor.locator('[data-action="remove"][data-path="rules[0].conditions[0]"]').click();
    await editor.locator('[data-path="reason"]').fill("a tenth of everyone else too");
    await editor.locator('button[type="submit"]').click();
    await editor.locator(".error", { hasText: "is not a percentage from 0 to 100" }).waitFor();
    assert.equal(await editor.locator('[data-path="fallthrough.rollout.percent"]').getAttribute("class"), "number field-error");
    await editor.locator('[data-path="fallthrough.rollout.percent"]').fill("10");
    await editor.locator('button[type="submit"]').click();
    await page.locator("#flag-states", { hasText: "otherwise 10% festive, the rest plain" }).waitFor();
    const edited2 = await productionState();
    assert.deepEqual(edited2.rules, [{ segments: ["beta-customers"],
      serve: { rollout: { weights: [{ variant: "festive", weight: 30000 }, { variant: "spring", weight: 70000 }] } } }]);
    assert.deepEqual(edited2.fallthrough, { rollout: { percent: 10000, inside: "festive", outside: "plain" } });
    const history = await stack.api("GET", "/api/v1/audit?flag=promo-banner&order=newest&limit=2");
    assert.deepEqual(history.body.map((r) => [r.action, r.reason]),
      [["flag.state", "a tenth of everyone else too"], ["flag.state", "holiday copy for loyal customers"]]);

    // Tokens: the secret once, then deleted.
    await page.click('nav a[href="#/tokens"]');
    await page.locator("#tokens tbody tr").first().waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "the tokens page");
    await page.fill('#new-token [name="name"]', "shop-production");
    await page.selectOption('#new-token [name="environment"]', "production");
    await page.click('#new-token button[type="submit"]');
    await page.locator("#new-token-secret").waitFor();
    const secret = await page.locator("#new-token-value").textContent();
    assert.match(secret, /^rg_/);
    const shop = page.locator("#tokens tr", { hasText: "shop-production" });
    await shop.waitFor();
    assert.equal((await shop.textContent()).includes(secret), false, "the list never shows a secret");
    const evaluated = await fetch(`${stack.controlPlane}/ofrep/v1/evaluate/flags/promo-banner`, {
      method: "POST", headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" }, body: '{"context": {"targetingKey": "user-1"}}' });
    assert.equal(evaluated.status, 200, "the new read token works");
    await page.screenshot({ path: join(artifacts, "dashboard-tokens.png"), fullPage: true });
    page.once("dialog", (dialog) => dialog.accept());
    await shop.locator("button.delete-token").click();
    await shop.waitFor({ state: "detached" });
    const after = await fetch(`${stack.controlPlane}/ofrep/v1/evaluate/flags/promo-banner`, {
      method: "POST", headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" }, body: '{"context": {"targetingKey": "user-1"}}' });
    assert.equal(after.status, 401, "deleted, it no longer works");

    // Segments, with members pasted from a spreadsheet.
    await page.click('nav a[href="#/segments"]');
    await page.locator("#segments tbody tr", { hasText: "beta-customers" }).waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "the segments page");
    await page.fill('#new-segment [name="key"]', "staff");
    await page.fill('#new-segment [name="included"]', "ana\nben, cy\tdee\n");
    await page.click('#new-segment button[type="submit"]');
    const staff = page.locator("#segments tr", { hasText: "staff" });
    await staff.waitFor();
    assert.deepEqual((await stack.api("GET", "/api/v1/segments/staff")).body.included, ["ana", "ben", "cy", "dee"]);
    // Editing it: other members, and a condition flag-core refuses at its field, then accepts.
    await staff.locator("button.edit-segment").click();
    const segmentEditor = page.locator("#edit-segment");
    await segmentEditor.locator('[data-path="included"]').fill("ana\nben\neve");
    await segmentEditor.locator('[data-action="add-condition"]').click();
    await segmentEditor.locator('[data-path="conditions[0].attribute"]').fill("email");
    await segmentEditor.locator('[data-path="conditions[0].op"]').selectOption("semver_gt");
    await segmentEditor.locator('[data-path="conditions[0].values"]').fill("soon");
    await segmentEditor.locator('button[type="submit"]').click();
    await segmentEditor.locator(".error", { hasText: "conditions[0].values[0]" }).waitFor();
    assert.equal(await segmentEditor.locator('[data-path="conditions[0].values"]').getAttribute("aria-invalid"), "true");
    assert.deepEqual((await stack.api("GET", "/api/v1/segments/staff")).body.included, ["ana", "ben", "cy", "dee"], "nothing stored");
    assert.deepEqual(await accessibilityProblems(page), [], "the segment editor");
    await segmentEditor.locator('[data-path="conditions[0].op"]').selectOption("ends_with");
    await segmentEditor.locator('[data-path="conditions[0].values"]').fill("@rollgate.dev");
    await segmentEditor.locator('button[type="submit"]').click();
    await segmentEditor.waitFor({ state: "hidden" });
    await page.locator("#segments tr", { hasText: "email ends with @rollgate.dev" }).waitFor();
    const staffNow = (await stack.api("GET", "/api/v1/segments/staff")).body;
    assert.deepEqual([staffNow.included, staffNow.conditions],
      [["ana", "ben", "eve"], [{ attribute: "email", op: "ends_with", values: ["@rollgate.dev"] }]]);
    await page.fill('#new-segment [name="key"]', "staff");
    await page.click('#new-segment button[type="submit"]');
    await page.locator("#new-segment-error", { hasText: "segment `staff` already exists" }).waitFor();
    await staff.locator("button.delete-segment").click();
    await page.fill("#confirm-reason", "made by mistake");
    await page.click("#confirm-ok");
    await staff.waitFor({ state: "detached" });
    assert.equal((await stack.api("GET", "/api/v1/segments/staff")).status, 404);

    // Settings: environments, webhooks, edges.
    await page.click('nav a[href="#/settings"]');
    await page.locator("#all-edges tbody tr", { hasText: "production" }).waitFor();
    assert.deepEqual(await accessibilityProblems(page), [], "the settings page");
    await page.fill('#new-environment [name="name"]', "qa");
    await page.click('#new-environment button[type="submit"]');
    await page.locator("#environments tbody tr", { hasText: "qa" }).waitFor();
    // The origins whose pages may call production from browsers; a malformed one is refused.
    const origins = page.locator('#environments form[data-environment="production"]');
    await origins.locator('[name="origins"]').fill("https://shop.example.com/checkout");
    await origins.locator("button").click();
    await page.locator("#settings-error", { hasText: "scheme, host and port only" }).waitFor();
    await origins.locator('[name="origins"]').fill("https://shop.example.com  https://m.example.com");
    await origins.locator("button").click();
    await page.locator("#toast", { hasText: "https://shop.example.com, https://m.example.com" }).waitFor();
    const production = (await stack.api("GET", "/api/v1/environments")).body.find((e) => e.name === "production");
    assert.deepEqual(production.allowed_origins, ["https://shop.example.com", "https://m.example.com"]);
    await page.fill('#new-webhook [name="name"]', "releases");
    await page.fill('#new-webhook [name="url"]', "http://127.0.0.1:9/hook");
    await page.selectOption('#new-webhook [name="environment"]', "production");
    await page.click('#new-webhook button[type="submit"]');
    const hook = page.locator("#webhooks tr", { hasText: "releases" });
    await hook.waitFor();
    page.once("dialog", (dialog) => dialog.accept());
    await hook.locator("button.delete-webhook").click();
    await hook.waitFor({ state: "detached" });
    assert.deepEqual((await stack.api("GET", "/api/v1/webhooks")).body, []);
    await page.screenshot({ path: join(artifacts, "dashboard-settings.png"), fullPage: true });
    assert.deepEqual(problems, [], "no script errors");
  } finally {
    await browser.close();
    await stack.stop();
  }
});
