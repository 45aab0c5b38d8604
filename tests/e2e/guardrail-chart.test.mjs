// The dashboard's guardrail charts for a sequential guardrail and the sample-ratio check, in
// headless Chromium: a canary plan three hours into its stage (its counts written into the
// control plane's database minute by minute, as apps would have reported them), drawn as the
// rise over control with its always-valid interval and the tolerance, and the variant's share
// of the rollout with its interval and the configured 5%. A spike then rolls the plan back and
// the chart follows without a reload. The screenshot goes to tests/artifacts/ (and, by hand,
// to docs/images/guardrail-charts.png).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { createFlags, launchChromium } from "./fixtures.mjs";
import { startStack, until } from "../stack.mjs";

const artifacts = process.env.ROLLGATE_ARTIFACTS ?? join(dirname(fileURLToPath(import.meta.url)), "..", "artifacts");

/**
 * Moves plan `id`'s start `minutes` back and writes the counts its stage would have had: 1,200
 * requests a minute, 5% of them to `new`, errors at 1% for both variants, each a random draw.
 */
const SEED_HISTORY = `
import random, sqlite3, sys
from datetime import datetime, timedelta, timezone
db, plan, minutes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = datetime.now(timezone.utc)
began = now - timedelta(minutes=minutes)
stamp = began.strftime("%Y-%m-%dT%H:%M:%S.") + f"{began.microsecond // 1000:03d}Z"
connection = sqlite3.connect(db, timeout=10)
with connection:
    connection.execute(
        "UPDATE plans SET created_at = ?1, body = json_set(body, '$.stage_started_at', ?1, '$.created_at', ?1) WHERE id = ?2",
        (stamp, plan))
    draw = random.Random(17)
    first = int(began.timestamp()) // 60
    rows = []
    for minute in range(first, first + minutes):
        exposed = sum(draw.random() < 0.05 for _ in range(1200))
        for variant, requests in (("new", exposed), ("old", 1200 - exposed)):
            errors = sum(draw.random() < 0.01 for _ in range(requests))
            for metric, value in (("requests", requests), ("errors", errors), ("rollout_evaluations", requests)):
                rows.append((variant, metric, minute, value))
    connection.executemany(
        "INSERT INTO metric_counts (environment, flag, variant, metric, minute, value) VALUES ('production', 'banner', ?, ?, ?, ?)",
        rows)
`;

test("a sequential guardrail and the sample-ratio check as charts with their intervals", async () => {
  mkdirSync(artifacts, { recursive: true });
  const db = join(mkdtempSync(join(tmpdir(), "rollgate-chart-")), "rollgate.db");
  const stack = await startStack({ db });
  const browser = await launchChromium();
  try {
    await createFlags(stack.api);
    // The canary's default guardrail is sequential; by hand, so only a breach moves the plan.
    const started = await stack.api("POST", "/api/v1/plans",
      { flag: "banner", environment: "production", template: "canary", auto_advance: false, rationale: "new greeting" });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const id = started.body.plan.id;
    assert.deepEqual(started.body.plan.stages[0].guardrails, [{ metric: "errors", per: "requests", max_increase: 0.005, min_sample: 1000, window_seconds: 3600 }]);
    execFileSync("python3", ["-c", SEED_HISTORY, db, String(id), "180"]);

    const readings = (await stack.api("GET", `/api/v1/plans/${id}`)).body.readings;
    assert.equal(readings.length, 2, JSON.stringify(readings));
    assert.deepEqual(readings.map((r) => r.verdict), ["pass", "pass"], JSON.stringify(readings));
    const history = (await stack.api("GET", `/api/v1/plans/${id}/readings`)).body;
    assert.ok(history.length > 80 && history.length <= 181, `${history.length} points`);

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = [];
    page.on("pageerror", (error) => problems.push(error.message));
    await page.goto(`${stack.controlPlane}/#/flags/banner`);
    await page.fill("#token", stack.adminToken);
    await page.click("#login button[type=submit]");
    await page.locator("#flag-title", { hasText: "banner" }).waitFor();

    const guardrail = page.locator('#flag-charts figure.interval[data-guardrail="errors/requests"][data-environment="production"]');
    const legend = await guardrail.locator("figcaption").textContent();
    assert.match(legend, /errors\/requests <= control \+ 0\.5 points \(95% sequential\)/);
    assert.match(legend, /now -?\d+(\.\d+)? points \(-?\d+(\.\d+)? to \d+(\.\d+)? points at 95%\)/);
    assert.match(legend, /tolerance 0\.5 points.*pass/s);
    // The band is the interval at each minute, which narrows as counts come in.
    assert.equal(await guardrail.locator("polygon.band").count(), 1);
    assert.equal(await guardrail.locator("polyline.limit").count(), 1);
    assert.equal(await guardrail.locator("line.zero").count(), 1);
    const estimate = await guardrail.locator("polyline.estimate").getAttribute("points");
    assert.ok(estimate.split(" ").length > 80, estimate);
    const widths = history.filter((p) => p.readings[0].difference)
      .map((p) => p.readings[0].difference.high - p.readings[0].difference.low);
    assert.ok(widths.at(-1) < widths[0] / 3, `the interval narrows: ${widths[0]} to ${widths.at(-1)}`);

    const ratio = page.locator('#flag-charts figure.ratio[data-environment="production"]');
    const ratioLegend = await ratio.locator("figcaption").textContent();
    assert.match(ratioLegend, /sample ratio: new gets 5% of rollout_evaluations/);
    assert.match(ratioLegend, /now [\d.]+% \([\d.]+% to [\d.]+% at 99\.9%\).*configured 5%.*pass/s);
    await page.locator("#flag-charts").screenshot({ path: join(artifacts, "guardrail-charts.png") });

    // A spike: 300 errors in 600 requests this minute. The scheduler rolls the plan back, and
    // the chart, without a reload, ends on the failing reading.
    const spike = await stack.api("POST", "/api/v1/environments/production/metrics", { counters: [
      { flag: "banner", variant: "new", counts: { requests: 600, errors: 300 } },
    ] }, stack.appToken);
    assert.equal(spike.status, 202, JSON.stringify(spike.body));
    await until(async () => (await stack.api("GET", `/api/v1/plans/${id}`)).body.status === "rolled_back",
      10000, "the guardrail to roll the plan back");
    await guardrail.locator("figcaption", { hasText: "fail" }).waitFor();
    assert.match(await guardrail.locator("figcaption").textContent(), /now \d+(\.\d+)? points \(\d+(\.\d+)? to \d+(\.\d+)? points at 95%\)/);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await stack.stop();
  }
});
