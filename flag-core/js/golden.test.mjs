// Replays the native engine's golden cases through the WebAssembly build.
// FLAG_CORE_WASM_PKG: the wasm-bindgen `--target nodejs` output; FLAG_CORE_GOLDEN: the cases
// written by `cargo run -p flag-core --example golden`. .ci/test sets both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pkg = process.env.FLAG_CORE_WASM_PKG;
const goldenPath = process.env.FLAG_CORE_GOLDEN;
assert.ok(pkg && goldenPath, 'set FLAG_CORE_WASM_PKG and FLAG_CORE_GOLDEN (see .ci/test)');
const { Engine } = createRequire(import.meta.url)(join(pkg, 'flag_core.js'));
const golden = JSON.parse(readFileSync(goldenPath, 'utf8'));

test('WebAssembly results equal native results for every golden case', () => {
  const engines = golden.snapshots.map((json) => new Engine(json));
  let evaluations = 0;
  for (const [i, c] of golden.cases.entries()) {
    const engine = engines[c.snapshot];
    const now = c.now ?? undefined;
    // Half the contexts go in as JSON text, half as values: both are part of the API.
    // A JS string is always read as JSON text, so a context that is a JSON string stays text.
    const parsed = safeParse(c.context);
    const context = i % 2 === 0 || typeof parsed === 'string' ? c.context : parsed;
    assert.deepStrictEqual(engine.evaluate(c.flag, context, now), c.expect, `case ${i}: ${c.flag} ${c.context}`);
    assert.deepStrictEqual(engine.evaluateAll(context, now), c.expectAll, `case ${i}: all flags for ${c.context}`);
    evaluations += 1 + (Array.isArray(c.expectAll) ? c.expectAll.length : 1);
  }
  assert.ok(golden.cases.length >= 10000, `only ${golden.cases.length} golden cases`);
  console.log(`${golden.cases.length} golden cases, ${evaluations} flag evaluations: native = WebAssembly`);
});

// A context that is not valid JSON stays text, so the module reports PARSE_ERROR itself.
function safeParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

test('a bad snapshot throws with the JSON path', () => {
  const snapshot = JSON.parse(golden.snapshots[0]);
  snapshot.flags[0].fallthrough = { rollout: { percent: 100001, inside: 'on', outside: 'off' } };
  assert.throws(() => new Engine(JSON.stringify(snapshot)), /flags\[0\]\.fallthrough\.rollout\.percent: percent 100001/);
  assert.throws(() => new Engine('{'), /EOF/);
  // Shape errors give line and column in WebAssembly (see docs/snapshot-format.md).
  snapshot.flags[0].fallthrough = { variant: 'on', weight: 1 };
  assert.throws(() => new Engine(JSON.stringify(snapshot)), /at line 1 column \d+/);
});

test('a snapshot that names a key twice throws with the JSON path', () => {
  const snapshot = golden.snapshots[0];
  const twice = snapshot.replace('"flags":[{', '"flags":[{"key":"twice",');
  assert.notEqual(twice, snapshot, 'the golden snapshot starts its flags as expected');
  assert.throws(() => new Engine(twice), /flags\[0\]\.key: duplicate key `key`/);
});

test('exposes the version and environment', () => {
  const engine = new Engine(golden.snapshots[0]);
  const snapshot = JSON.parse(golden.snapshots[0]);
  assert.equal(engine.version, snapshot.version);
  assert.equal(engine.environment, snapshot.environment);
});
