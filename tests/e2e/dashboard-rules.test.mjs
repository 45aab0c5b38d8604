// The dashboard's rule editor on flags imported from other systems: a split under an imported
// algorithm is edited in parts of its own total (not thousandths of a percent), and the
// case-insensitive operators keep their names and their text operands.

import assert from "node:assert/strict";
import { test } from "node:test";

// lib.js reads the session's token when loaded; the editor's functions need nothing else.
globalThis.sessionStorage ??= { getItem: () => null };
const { stateDraft, stateEditorFields, stateOut } = await import("../../control-plane/dashboard/rules.js");

const variants = ["red", "green", "blue"];

test("an imported split is edited in parts of its total and sent back unchanged", () => {
  const state = {
    enabled: true,
    fallthrough: { rollout: {
      algorithm: { name: "flagd", prefix: "header-color" }, bucket_by: "email",
      weights: [{ variant: "red", weight: 2 }, { variant: "green", weight: 1 }, { variant: "blue", weight: 1 }],
    } },
  };
  const draft = stateDraft(state, variants);
  assert.deepEqual(draft.fallthrough.rollout.weights.map((w) => w.weight), ["2", "1", "1"]);
  const fields = stateEditorFields(draft, variants, []);
  assert.match(fields, /total 4 parts/);
  assert.doesNotMatch(fields, /% of 100%/);
  assert.deepEqual(stateOut(draft, state).fallthrough, state.fallthrough);

  draft.fallthrough.rollout.weights[0].weight = "5";
  assert.equal(stateOut(draft, state).fallthrough.rollout.weights[0].weight, 5);
  draft.fallthrough.rollout.weights[0].weight = "2.5";
  assert.throws(() => stateOut(draft, state), /not a whole number of parts/);
});

test("rg1 weights stay percentages", () => {
  const state = { enabled: true, fallthrough: { rollout: {
    weights: [{ variant: "red", weight: 50000 }, { variant: "green", weight: 50000 }] } } };
  const draft = stateDraft(state, variants);
  assert.deepEqual(draft.fallthrough.rollout.weights.map((w) => w.weight), ["50", "50"]);
  assert.match(stateEditorFields(draft, variants, []), /total 100% of 100%/);
  assert.deepEqual(stateOut(draft, state).fallthrough, state.fallthrough);
});

test("case-insensitive conditions keep their operator and text operands", () => {
  const rule = {
    conditions: [{ attribute: "country", op: "in_ignore_case", values: ["se", "42"] }],
    serve: { variant: "green" },
  };
  const state = { enabled: true, rules: [rule], fallthrough: { variant: "red" } };
  const draft = stateDraft(state, variants);
  assert.match(stateEditorFields(draft, variants, []), /<option value="in_ignore_case" selected>is one of \(any case\)/);
  assert.deepEqual(stateOut(draft, state).rules, [rule]);
});
