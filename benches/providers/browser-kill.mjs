// Kill propagation to a browser: the control plane (SQLite) pushes to a production edge in
// Miniflare, whose Durable Object announces the new configuration on the OFREP event stream of
// a page from another origin running the OpenFeature web SDK with the OFREP web provider in
// headless Chromium (tests/browser-app.mjs); the provider re-fetches and reports the change.
// Over CYCLES kills (default 100), from just before the kill is sent until the page's
// ConfigurationChanged handler sees the flag DISABLED (both clocks are this machine's).
// Usage: node benches/providers/browser-kill.mjs
//   (after cargo build --release -p control-plane --bin rollgate and edge-worker/build)
import { nextChange, openApp, startAppServer } from "../../tests/browser-app.mjs";
import { launchChromium } from "../../tests/e2e/fixtures.mjs";
import { startStack, until } from "../../tests/stack.mjs";

const cycles = Number(process.env.CYCLES ?? 100);
const FLAG = "browser-banner";
const state = "/api/v1/environments/production/flags";
const quantile = (values, q) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil(q * values.length) - 1)];

const stack = await startStack();
const app = await startAppServer();
const browser = await launchChromium();
try {
  const ok = (answer, what) => {
    if (answer.status >= 300) throw new Error(`${what}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  };
  ok(await stack.api("POST", "/api/v1/flags", { key: FLAG, type: "boolean", variants: { on: true, off: false }, off_variant: "off", client_visible: true }), "flag");
  ok(await stack.api("PUT", `${state}/${FLAG}`, { enabled: true, fallthrough: { variant: "on" }, reason: "bench" }), "state");
  ok(await stack.api("PUT", "/api/v1/environments/production/allowed-origins", { allowed_origins: [app.origin] }), "origins");
  const { token } = ok(await stack.api("POST", "/api/v1/tokens", { name: "bench-page", scope: "client", environment: "production" }), "token");
  // The token came last, in its own readers revision: once the edge knows it, it has everything.
  const known = async () => (await fetch(`${stack.edge}/ofrep/v1/evaluate/flags`, {
    method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}",
  })).status === 200;
  await until(known, 10000, "the edge to know the client token");
  const { page, started } = await openApp(browser, { origin: app.origin, edge: stack.edge, token, watch: FLAG });
  if (!started.ok) throw new Error(`the app did not start: ${started.error}`);

  const latencies = [];
  for (let i = 0; i < cycles; i++) {
    const seen = await page.evaluate(() => window.changes.length);
    const sentAt = Date.now();
    ok(await stack.api("POST", `${state}/${FLAG}/kill`, { reason: `bench ${i}` }), "kill");
    const killed = await nextChange(page, seen);
    if (killed.value !== false) throw new Error(`cycle ${i}: the page saw ${JSON.stringify(killed)}`);
    latencies.push(killed.at - sentAt);
    ok(await stack.api("POST", `${state}/${FLAG}/unkill`, { reason: "bench" }), "unkill");
    await nextChange(page, seen + 1);
  }
  console.log(`kill to browser over ${cycles} kills (ms): p50 ${quantile(latencies, 0.5)}, p99 ${quantile(latencies, 0.99)}, p99.9 ${quantile(latencies, 0.999)}, max ${Math.max(...latencies)}`);
} finally {
  await browser.close();
  await app.close();
  await stack.stop();
}
