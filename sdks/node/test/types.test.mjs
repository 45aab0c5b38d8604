// The TypeScript types (src/index.d.ts) compile against @openfeature/server-sdk's, as an app
// uses them (types.ts), and refuse what they should.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

test("the TypeScript types compile, strictly", () => {
  const tsc = join(here, "..", "node_modules", ".bin", "tsc");
  const result = spawnSync(tsc, ["-p", join(here, "tsconfig.json")], { encoding: "utf8" });
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
});
