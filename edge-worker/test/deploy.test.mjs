// wrangler.toml deploys what edge-worker/build makes, as is: `wrangler deploy --dry-run`
// (offline: it needs no account) accepts it with every binding, and the upload stays within
// 250 KB gzipped.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { builtWorker } from "../js/edge.mjs";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Every file under `dir`, recursively. */
const files = (dir) => readdirSync(dir).flatMap((name) => {
  const path = join(dir, name);
  return statSync(path).isDirectory() ? files(path) : [path];
});

test("wrangler.toml deploys the built worker, within 250 KB gzipped", () => {
  assert.equal(realpathSync(join(here, "dist")), realpathSync(builtWorker()), "build links dist/ to its output");
  const outdir = mkdtempSync(join(tmpdir(), "rollgate-wrangler-"));
  const wrangler = join(here, "node_modules", ".bin", "wrangler");
  const run = spawnSync(wrangler, ["deploy", "--dry-run", "--outdir", outdir], {
    cwd: here,
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", CI: "1" },
    timeout: 120000,
  });
  const output = `${run.stdout}${run.stderr}`;
  assert.equal(run.status, 0, output);
  assert.doesNotMatch(output, /WARNING/, "no warnings");
  for (const binding of ["env.EDGE_CONFIG (EdgeConfig)", "Durable Object", "env.ENVIRONMENT", "env.CONTROL_PLANE_URL", "env.REGIONS"]) {
    assert.ok(output.includes(binding), `${binding} in\n${output}`);
  }
  const uploaded = files(outdir).filter((path) => /\.(js|wasm)$/.test(path));
  assert.deepEqual(uploaded.map((path) => path.slice(outdir.length + 1)).sort().filter((p) => !p.startsWith("snippets")),
    ["index.js", "index_bg.wasm", "worker.js"]);
  const gzipped = uploaded.reduce((sum, path) => sum + gzipSync(readFileSync(path), { level: 9 }).length, 0);
  console.log(`edge upload: ${gzipped} bytes gzipped`);
  assert.ok(gzipped <= 250 * 1024, `${gzipped} bytes gzipped, over 250 KB`);
});
