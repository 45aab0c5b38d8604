// Flags and contexts shared by the end-to-end tests: a few realistic flags across the
// evaluator's features, and many varied contexts; and the headless browser the dashboard's
// tests drive.
import { chromium } from "playwright-core";

/** Puts three flags beside the demo flag in production, with rules, segments and rollouts. */
export async function createFlags(api) {
  const calls = [
    ["POST", "/api/v1/segments", { key: "beta-customers", included: ["user-3", "user-14", "user-159"],
      conditions: [{ attribute: "plan", op: "eq", values: ["enterprise"] }] }],
    ["POST", "/api/v1/flags", { key: "banner", type: "string", variants: { old: "Welcome", new: "Hello!" }, off_variant: "old" }],
    ["PUT", "/api/v1/environments/production/flags/banner", { enabled: true, rules: [
      { conditions: [{ attribute: "country", op: "in", values: ["SE", "NO"] }], serve: { variant: "new" } },
      { segments: ["beta-customers"], serve: { rollout: { percent: 50000, inside: "new", outside: "old" } } },
    ], fallthrough: { variant: "old" } }],
    ["POST", "/api/v1/flags", { key: "search-limit", type: "number", variants: { low: 10, mid: 25, high: 50 }, off_variant: "low" }],
    ["PUT", "/api/v1/environments/production/flags/search-limit", { enabled: true, rules: [
      { conditions: [{ attribute: "appVersion", op: "semver_gt", values: ["3.0.0"] }],
        serve: { rollout: { weights: [{ variant: "low", weight: 20000 }, { variant: "mid", weight: 30000 }, { variant: "high", weight: 50000 }] } } },
    ], fallthrough: { variant: "low" } }],
    ["POST", "/api/v1/flags", { key: "new-checkout-theme", type: "object", variants: { plain: { color: "gray" }, bright: { color: "orange", rounded: true } }, off_variant: "plain" }],
    ["PUT", "/api/v1/environments/production/flags/new-checkout-theme", { enabled: true,
      prerequisites: [{ flag: "banner", variant: "new" }], fallthrough: { variant: "bright" } }],
    ["PUT", "/api/v1/environments/production/flags/checkout-v2/rollout", { percent: 25, stage: "beta", reason: "e2e" }],
  ];
  for (const [method, path, body] of calls) {
    const { status, body: answer } = await api(method, path, body);
    if (status >= 300) throw new Error(`${method} ${path}: ${status} ${JSON.stringify(answer)}`);
  }
}

export const FLAGS = [
  ["checkout-v2", "boolean", false],
  ["banner", "string", "default"],
  ["search-limit", "number", -1],
  ["new-checkout-theme", "object", {}],
];

/** `count` varied contexts; every 50th has no targeting key. */
export function contexts(count) {
  const countries = ["SE", "NO", "DE", "US", "BR", "JP"];
  const plans = ["free", "pro", "enterprise"];
  const versions = ["2.9.1", "3.0.0", "3.0.1", "3.14.1", "4.0.0-beta.2"];
  return Array.from({ length: count }, (_, i) => {
    const context = { country: countries[i % 6], plan: plans[(i * 7) % 3], appVersion: versions[(i * 3) % 5] };
    if (i % 50 !== 0) context.targetingKey = `user-${i}`;
    return context;
  });
}

/** Evaluates checkout-v2 at the stack's edge, as an app does: the OFREP answer and its status. */
export async function checkoutAtEdge(stack, targetingKey) {
  const response = await fetch(`${stack.edge}/ofrep/v1/evaluate/flags/checkout-v2`, {
    method: "POST",
    headers: { "x-api-key": stack.appToken, "content-type": "application/json" },
    body: JSON.stringify({ context: { targetingKey } }),
  });
  return { status: response.status, ...(await response.json()) };
}

/** Debian's Chromium, headless, as the dashboard's tests drive it (`CHROMIUM` overrides it). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}
