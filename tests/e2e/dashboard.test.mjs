// The dashboard in headless Chromium (Debian's, driven by playwright-core): log in, bump a
// rollout, kill a flag, and see the edge in Miniflare answer DISABLED. Screenshots go to
// tests/artifacts/ (or $ROLLGATE_ARTIFACTS).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { checkoutAtEdge, createFlags, launchChromium } from "./fixtures.mjs";
import { startStack, until } from "../stack.mjs";

const artifacts = process.env.ROLLGATE_ARTIFACTS ?? join(dirname(fileURLToPath(import.meta.url)), "..", "artifacts");

test("a release manager logs in, bumps a rollout and kills a flag from the dashboard", async () => {
  mkdirSync(artifacts, { recursive: true });
  const stack = await startStack();
  const browser = await launchChromium();
  try {
    await createFlags(stack.api);
    // A plan on another flag, with readings, so the board shows a timeline and a decision.
    const plan = await stack.api("POST", "/api/v1/plans",
      { flag: "banner", environment: "production", template: "canary", rationale: "new greeting passed review" });
    assert.equal(plan.status, 201, JSON.stringify(plan.body));
    await stack.api("POST", "/api/v1/environments/production/metrics", { counters: [
      { flag: "banner", variant: "new", counts: { requests: 3600, errors: 18 } },
      { flag: "banner", variant: "old", counts: { requests: 68400, errors: 342 } },
    ] }, stack.appToken);

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = [];
    page.on("pageerror", (error) => problems.push(error.message));
    await page.goto(stack.controlPlane);

    // A wrong token is refused with a message; the right one opens the board.
    await page.fill("#token", "rg_not_a_real_token");
    await page.click("#login button[type=submit]");
    await page.locator("#login-error", { hasText: "Unknown token." }).waitFor();
    await page.fill("#token", stack.adminToken);
    await page.click("#login button[type=submit]");
    const row = page.locator('#flags tr[data-flag="checkout-v2"]');
    await row.waitFor();
    assert.equal(await page.locator("#environment").inputValue(), "production");
    await page.locator('#plans .plan .stage.current', { hasText: "canary" }).waitFor();
    await page.screenshot({ path: join(artifacts, "dashboard-1-logged-in.png"), fullPage: true });

    // The rollout needs a reason before it can be applied.
    await row.locator(".slider").fill("30");
    assert.equal(await row.locator(".percent").textContent(), "30%");
    assert.equal(await row.locator("button.apply").isDisabled(), true);
    await row.locator(".reason").fill("healthy at 5% for a day");
    await row.locator("button.apply").click();
    await row.locator(".exposure", { hasText: "30% on" }).waitFor();
    const record = (await stack.api("GET", "/api/v1/flags/checkout-v2")).body;
    assert.equal(record.environments.production.fallthrough.rollout.percent, 30000);
    await until(async () => (await checkoutAtEdge(stack, "user-1")).reason === "SPLIT", 5000, "the rollout at the edge");
    await page.screenshot({ path: join(artifacts, "dashboard-2-rollout.png"), fullPage: true });

    // The kill switch asks for confirmation and a reason.
    await row.locator("button.kill").click();
    const dialog = page.locator("#confirm");
    await dialog.waitFor();
    assert.match(await page.locator("#confirm-title").textContent(), /Kill checkout-v2 in production\?/);
    await page.fill("#confirm-reason", "checkout errors from the dashboard test");
    await page.click("#confirm-ok");
    await row.locator(".exposure", { hasText: "KILLED" }).waitFor();
    const killed = await until(async () => {
      const answer = await checkoutAtEdge(stack, "user-1");
      return answer.reason === "DISABLED" && answer;
    }, 5000, "the edge to serve the kill");
    assert.equal(killed.variant, "off");
    const audit = (await stack.api("GET", "/api/v1/audit?flag=checkout-v2")).body;
    assert.equal(audit.at(-1).reason, "checkout errors from the dashboard test");
    await page.screenshot({ path: join(artifacts, "dashboard-3-killed.png"), fullPage: true });

    // Live: a change made elsewhere appears without a reload.
    await stack.api("POST", "/api/v1/environments/production/flags/checkout-v2/unkill", { reason: "fixed, from the API" });
    await row.locator("button.kill").waitFor({ timeout: 5000 });

    // A flag of three variants is rolled out with the variant picked.
    const limits = page.locator('#flags tr[data-flag="search-limit"]');
    assert.deepEqual(await limits.locator("select.variant option").allTextContents(), ["high", "mid"]);
    await limits.locator("select.variant").selectOption("high");
    await limits.locator(".slider").fill("12.5");
    assert.equal(await limits.locator(".percent").textContent(), "12.5%");
    await limits.locator(".reason").fill("the big limit for some");
    await limits.locator("button.apply").click();
    await limits.locator(".exposure", { hasText: "12.5% high" }).waitFor();
    const limitsRecord = (await stack.api("GET", "/api/v1/flags/search-limit")).body;
    assert.deepEqual(limitsRecord.environments.production.fallthrough.rollout,
      { percent: 12500, inside: "high", outside: "low" });

    // Advancing a plan by hand first shows what its guardrails say.
    const banner = page.locator('#flags tr[data-flag="banner"]');
    await banner.locator(".reason").fill("looks fine");
    // A change elsewhere refreshes the board live; what is being typed survives it.
    await stack.api("PUT", "/api/v1/environments/production/flags/checkout-v2/rollout", { percent: 35, reason: "from the API" });
    await row.locator(".exposure", { hasText: "35% on" }).waitFor();
    assert.equal(await banner.locator(".reason").inputValue(), "looks fine");
    await banner.locator("button.advance").click();
    await dialog.waitFor();
    assert.match(await page.locator("#confirm-title").textContent(), /Advance banner to assessed in production\?/);
    assert.match(await page.locator("#confirm-text").textContent(),
      /Guardrails now: errors\/requests <= control \+ 0\.5 points \(95% sequential\): 0\.5% \(18 of 3600\), 0 points over control \(-0\.\d+ to 0\.\d+ points\), pass/);
    assert.equal(await page.locator("#confirm-reason").inputValue(), "looks fine");
    await page.click('#confirm button[value="cancel"]');
    assert.equal((await stack.api("GET", `/api/v1/plans/${plan.body.plan.id}`)).body.stage, 0, "cancelled: not advanced");

    // Production looks unlike staging, and each lists only its own edges; the plan's hold is
    // written as the CLI writes it, and its times in local time with UTC on hover.
    assert.equal(await page.evaluate(() => document.body.classList.contains("production")), true);
    await page.locator("#edges tbody td", { hasText: "production" }).first().waitFor();
    assert.match(await page.locator("#plans .stage").first().textContent(), /hold 1h/);
    assert.match(await page.locator("#plans time").first().getAttribute("title"), /Z$/);
    await page.selectOption("#environment", "staging");
    await page.locator("#edges tbody td", { hasText: "No edges in this environment." }).waitFor();
    assert.equal(await page.evaluate(() => document.body.classList.contains("production")), false);

    // From 420 px wide, nothing spills out of the page.
    await page.selectOption("#environment", "production");
    await row.waitFor();
    await page.setViewportSize({ width: 420, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 420 px screen`);
    await page.screenshot({ path: join(artifacts, "dashboard-4-narrow.png"), fullPage: true });
    assert.deepEqual(problems, [], "no script errors");
  } finally {
    await browser.close();
    await stack.stop();
  }
});
