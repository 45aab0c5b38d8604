// A web app on its own origin, evaluating at the edge with the OpenFeature web SDK and the
// newest OFREP web provider, in headless Chromium. Used by tests/e2e/browser-edge.test.mjs and
// benches/providers/browser-kill.mjs.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const modules = join(dirname(fileURLToPath(import.meta.url)), "node_modules");

// Bare specifiers to the packages' ES modules, as a bundler would resolve them.
const IMPORTS = {
  "@openfeature/core": "/modules/@openfeature/core/dist/esm/index.js",
  "@openfeature/web-sdk": "/modules/@openfeature/web-sdk/dist/esm/index.js",
  "@openfeature/ofrep-web-provider": "/modules/@openfeature/ofrep-web-provider/index.esm.js",
  "@openfeature/ofrep-core":
    "/modules/@openfeature/ofrep-web-provider/node_modules/@openfeature/ofrep-core/index.esm.js",
};

// The app: the edge and client token come in the page's query. Every configuration change the
// provider reports is recorded with the browser's clock, with the watched flag's value and
// reason then.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Rollgate browser app</title>
<script type="importmap">${JSON.stringify({ imports: IMPORTS })}</script>
<script type="module">
import { OpenFeature, ProviderEvents } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";
const query = new URLSearchParams(location.search);
const watched = query.get("watch");
window.changes = [];
window.ready = (async () => {
  await OpenFeature.setContext({ targetingKey: "visitor-1" });
  const provider = new OFREPWebProvider({
    baseUrl: query.get("edge"),
    headers: [["Authorization", "Bearer " + query.get("token")]],
    cacheMode: "disabled",
  });
  await OpenFeature.setProviderAndWait(provider);
  window.client = OpenFeature.getClient();
  // Changes of the watched flag only: the provider fetches on each stream event without an
  // overlap guard, so two fetches may report one state twice.
  window.client.addHandler(ProviderEvents.ConfigurationChanged, () => {
    const { value, reason } = window.client.getBooleanDetails(watched, false);
    const last = window.changes.at(-1);
    if (last && last.value === value && last.reason === reason) return;
    window.changes.push({ at: Date.now(), value, reason });
  });
})();
</script></head><body>app</body></html>`;

/**
 * Serves the app and the packages it imports on a loopback address and port: one origin, other
 * than the edge's (127.0.0.1) whatever the port.
 */
export async function startAppServer(host = "127.0.0.2") {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url, "http://app").pathname;
    if (path === "/") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return response.end(PAGE);
    }
    const file = normalize(join(modules, path.replace(/^\/modules\//, "")));
    if (!path.startsWith("/modules/") || !file.startsWith(modules)) {
      response.writeHead(404);
      return response.end();
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
      response.end(body);
    } catch {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise((resolve) => server.listen(0, host, resolve));
  const origin = `http://${host}:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => server.close(resolve)) };
}

/**
 * Opens the app from `origin` in `browser`, evaluating at `edge` with `token`, recording changes
 * of the boolean flag `watch`. Returns the page and whether the provider started (or its error).
 */
export async function openApp(browser, { origin, edge, token, watch }) {
  const page = await browser.newPage();
  const streams = [];
  page.on("request", (request) => {
    if (request.url().includes("/ofrep/v1/events")) streams.push(request.url());
  });
  const query = new URLSearchParams({ edge, token, watch });
  await page.goto(`${origin}/?${query}`);
  const started = await page.evaluate(() =>
    window.ready.then(() => ({ ok: true }), (error) => ({ ok: false, error: String(error) })),
  );
  return { page, started, streams };
}

/** Waits until the app has recorded more than `seen` changes; returns the newest. */
export async function nextChange(page, seen, timeout = 10000) {
  await page.waitForFunction((count) => window.changes.length > count, seen, { timeout });
  return page.evaluate(() => window.changes[window.changes.length - 1]);
}
