// Editors for targeting: a flag's rules and fallthrough in one environment, and a segment's
// members and conditions. Each editor works on a draft: a plain object shaped like the API's
// body, except that percentages and condition values are the text the person typed. Every
// control carries `data-path`, the draft path it edits (`rules[0].serve.rollout.percent`), which
// is also the path flag-core names when it refuses the change, so the refusal lands on it.

import { escape } from "./lib.js";

const OPERATORS = {
  eq: "equals", neq: "does not equal", in: "is one of", not_in: "is none of",
  starts_with: "starts with", ends_with: "ends with", contains: "contains",
  lt: "<", lte: "≤", gt: ">", gte: "≥",
  semver_eq: "is version", semver_lt: "is a version below", semver_gt: "is a version above",
  before: "is before", after: "is after", exists: "exists", not_exists: "does not exist",
  in_ignore_case: "is one of (any case)", not_in_ignore_case: "is none of (any case)",
  starts_with_ignore_case: "starts with (any case)", ends_with_ignore_case: "ends with (any case)",
  contains_ignore_case: "contains (any case)",
};
/** Operators whose operands are always strings, however they look. */
const STRING_OPERATORS = new Set(["starts_with", "ends_with", "contains", "semver_eq", "semver_lt", "semver_gt", "before", "after",
  "in_ignore_case", "not_in_ignore_case", "starts_with_ignore_case", "ends_with_ignore_case", "contains_ignore_case"]);
const NO_OPERANDS = new Set(["exists", "not_exists"]);

/** A refusal found before sending, at a draft path. */
class FieldError extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

// ---- Drafts --------------------------------------------------------------------------------

/** `rules[0].serve.kind` as keys: ["rules", 0, "serve", "kind"]. */
const keys = (path) => [...path.matchAll(/[^.[\]]+/g)].map(([k]) => (/^\d+$/.test(k) ? Number(k) : k));

function read(draft, path) {
  return keys(path).reduce((at, key) => at?.[key], draft);
}

function write(draft, path, value) {
  const list = keys(path);
  const last = list.pop();
  list.reduce((at, key) => at[key], draft)[last] = value;
}

/** A percentage as typed (`25`, `2.5`, `2.5%`) in the snapshot's thousandths. */
function thousandths(text, path) {
  const match = /^\s*(\d{1,3})(?:\.(\d{1,3}))?\s*%?\s*$/.exec(String(text ?? ""));
  const scaled = match ? Number(match[1]) * 1000 + Number((match[2] ?? "").padEnd(3, "0")) : NaN;
  if (!(scaled <= 100000)) {
    throw new FieldError(path, `"${text}" is not a percentage from 0 to 100 with at most three decimals`);
  }
  return scaled;
}

const percentText = (value) => String(value / 1000);

/** An imported split's weight: a whole number of parts of the weights' total, up to 100000. */
function parts(text, path) {
  const value = /^\s*\d{1,6}\s*$/.test(String(text ?? "")) ? Number(text) : NaN;
  if (!(value <= 100000)) throw new FieldError(path, `"${text}" is not a whole number of parts from 0 to 100000`);
  return value;
}

/** Operands as one line: `SE, NO`; a string that would read as something else is quoted. */
function operandsText(values) {
  return (values ?? []).map((value) => {
    if (typeof value !== "string") return JSON.stringify(value);
    let literal = false;
    try { literal = typeof JSON.parse(value) !== "string"; } catch { /* an ordinary string */ }
    return literal || /[,"]/.test(value) || value.trim() !== value || value === "" ? JSON.stringify(value) : value;
  }).join(", ");
}

/** The operands typed for `op`: comma-separated; `"…"` is a string; numbers and booleans as such. */
function operands(text, op, path) {
  if (NO_OPERANDS.has(op)) return [];
  const tokens = [...String(text).matchAll(/\s*("(?:[^"\\]|\\.)*"|[^,]*?)\s*(?:,|$)/g)]
    .map(([, token]) => token).filter((token, i, all) => token !== "" || i < all.length - 1);
  return tokens.filter(Boolean).map((token, i) => {
    if (token.startsWith('"')) {
      try { return JSON.parse(token); } catch { throw new FieldError(`${path}[${i}]`, `${token} is not a quoted string`); }
    }
    if (STRING_OPERATORS.has(op)) return token;
    if (token === "true" || token === "false") return token === "true";
    // A number only when it reads back the same (`02134` and 20-digit ids stay text).
    const number = Number(token);
    if (token.trim() !== "" && Number.isFinite(number) && String(number) === token
      && (!Number.isInteger(number) || Number.isSafeInteger(number))) return number;
    return token;
  });
}

function conditionDraft(condition) {
  return { attribute: condition.attribute ?? "", op: condition.op, values: operandsText(condition.values) };
}

function conditionOut(condition, path) {
  const out = { op: condition.op, values: operands(condition.values, condition.op, `${path}.values`) };
  if (condition.attribute.trim()) out.attribute = condition.attribute.trim();
  return out;
}

/** Equal weights that sum to exactly 100%: the first variant takes what division leaves. */
function evenly(variants) {
  const share = Math.floor(100000 / Math.max(1, variants.length));
  return variants.map((variant, i) => ({ variant, weight: share + (i === 0 ? 100000 - share * variants.length : 0) }));
}

function serveDraft(serve, variants) {
  const [first, second] = variants;
  const rollout = serve.rollout ?? {};
  // Weights under an imported algorithm are parts of their own total, not thousandths of a percent.
  const inParts = rollout.algorithm !== undefined && rollout.weights !== undefined;
  return {
    kind: serve.variant !== undefined ? "variant" : rollout.weights && rollout.percent === undefined ? "weights" : "percent",
    variant: serve.variant ?? first,
    rollout: {
      percent: rollout.percent !== undefined ? percentText(rollout.percent) : "0",
      inside: rollout.inside ?? first,
      outside: rollout.outside ?? second ?? first,
      weights: (rollout.weights ?? evenly(variants)).map((w) => ({ variant: w.variant, weight: inParts ? String(w.weight) : percentText(w.weight) })),
      parts: inParts,
      // Kept as they were: the editor does not change who is bucketed by what, or how (an
      // imported flag's algorithm), or the label.
      bucket_by: rollout.bucket_by,
      algorithm: rollout.algorithm,
      split: rollout.percent !== undefined && rollout.weights ? rollout.weights : undefined,
      stage: rollout.stage,
    },
  };
}

function serveOut(serve, path) {
  if (serve.kind === "variant") return { variant: serve.variant };
  const { bucket_by, algorithm, split, stage } = serve.rollout;
  const rollout = bucket_by ? { bucket_by } : {};
  if (algorithm) rollout.algorithm = algorithm;
  if (serve.kind === "percent") {
    rollout.percent = thousandths(serve.rollout.percent, `${path}.rollout.percent`);
    // An Unleash rollout whose units inside are split by its variants keeps the split.
    if (split) rollout.weights = split;
    else rollout.inside = serve.rollout.inside;
    rollout.outside = serve.rollout.outside;
  } else {
    const weight = serve.rollout.parts ? parts : thousandths;
    rollout.weights = serve.rollout.weights.map((w, i) =>
      ({ variant: w.variant, weight: weight(w.weight, `${path}.rollout.weights[${i}].weight`) }));
  }
  if (stage) rollout.stage = stage;
  return { rollout };
}

/** A draft of a flag's state in one environment. */
export function stateDraft(flagState, variants) {
  return {
    rules: (flagState.rules ?? []).map((rule) => ({
      segments: [...(rule.segments ?? [])],
      conditions: (rule.conditions ?? []).map(conditionDraft),
      serve: serveDraft(rule.serve, variants),
    })),
    fallthrough: serveDraft(flagState.fallthrough, variants),
    reason: "",
  };
}

/** The body of `PUT /api/v1/environments/{env}/flags/{flag}`; throws a FieldError. */
export function stateOut(draft, flagState) {
  return {
    enabled: flagState.enabled !== false,
    prerequisites: flagState.prerequisites ?? [],
    rules: draft.rules.map((rule, i) => {
      const out = {};
      if (rule.segments.length) out.segments = rule.segments;
      if (rule.conditions.length) out.conditions = rule.conditions.map((c, j) => conditionOut(c, `rules[${i}].conditions[${j}]`));
      out.serve = serveOut(rule.serve, `rules[${i}].serve`);
      return out;
    }),
    fallthrough: serveOut(draft.fallthrough, "fallthrough"),
    ...(draft.reason.trim() ? { reason: draft.reason.trim() } : {}),
  };
}

/** Keys as the segment editor shows them: one per line (a pasted row's tabs split too). */
const keysPerLine = (text) => text.split(/[\r\n\t]+/).map((key) => key.trim()).filter(Boolean);

/** A draft of a segment; members are the pasted text. */
export function segmentDraft(segment) {
  return {
    key: segment.key,
    included: (segment.included ?? []).join("\n"),
    excluded: (segment.excluded ?? []).join("\n"),
    conditions: (segment.conditions ?? []).map(conditionDraft),
  };
}

/** Keys pasted from a spreadsheet or a list: one per line, or separated by commas, tabs or spaces. */
export const pastedKeys = (text) => text.split(/[\s,]+/).filter(Boolean);

/** The body of `PUT /api/v1/segments/{key}`; throws a FieldError. */
export function segmentOut(draft) {
  return {
    key: draft.key,
    included: keysPerLine(draft.included),
    excluded: keysPerLine(draft.excluded),
    conditions: draft.conditions.map((c, i) => conditionOut(c, `conditions[${i}]`)),
  };
}

// ---- Rendering -----------------------------------------------------------------------------

const options = (names, selected, label = (name) => name) =>
  names.map((name) => `<option value="${escape(name)}"${name === selected ? " selected" : ""}>${escape(label(name))}</option>`).join("");

function select(path, names, selected, label, text = (name) => name) {
  return `<select data-path="${path}" aria-label="${escape(label)}">${options(names, selected, text)}</select>`;
}

function input(path, value, label, extra = "") {
  return `<input data-path="${path}" value="${escape(value)}" aria-label="${escape(label)}" autocomplete="off" ${extra}>`;
}

const button = (action, path, text, label = text) =>
  `<button type="button" data-action="${action}" data-path="${path}" aria-label="${escape(label)}">${escape(text)}</button>`;

function conditionsEditor(path, conditions, what) {
  const rows = conditions.map((condition, i) => {
    const at = `${path}[${i}]`;
    const operandsInput = NO_OPERANDS.has(condition.op) ? ""
      : input(`${at}.values`, condition.values, `${what}, condition ${i + 1}: values, comma-separated`, 'placeholder="SE, NO"');
    return `<div class="condition">
      ${input(`${at}.attribute`, condition.attribute, `${what}, condition ${i + 1}: attribute`, 'placeholder="country"')}
      ${select(`${at}.op`, Object.keys(OPERATORS), condition.op, `${what}, condition ${i + 1}: operator`, (op) => OPERATORS[op])}
      ${operandsInput}
      ${button("remove", at, "✕", `Remove condition ${i + 1} of ${what}`)}
    </div>`;
  }).join("");
  return `<div class="conditions">${rows}${button("add-condition", path, "+ condition", `Add a condition to ${what}`)}</div>`;
}

function serveEditor(path, serve, variants, what) {
  const kind = select(`${path}.kind`, ["variant", "percent", "weights"], serve.kind, `${what}: what to serve`,
    (k) => ({ variant: "a variant", percent: "a percentage rollout", weights: "a weighted split" })[k]);
  let detail;
  if (serve.kind === "variant") {
    detail = select(`${path}.variant`, variants, serve.variant, `${what}: variant`);
  } else if (serve.kind === "percent") {
    const r = serve.rollout;
    detail = `${input(`${path}.rollout.percent`, r.percent, `${what}: percent of units`, 'inputmode="decimal" class="number"')}%
      get ${select(`${path}.rollout.inside`, variants, r.inside, `${what}: variant inside the rollout`)},
      the rest ${select(`${path}.rollout.outside`, variants, r.outside, `${what}: variant for the rest`)}`;
  } else {
    const total = serve.rollout.weights.reduce((sum, w) => sum + (Number(String(w.weight).replace(/%$/, "")) || 0), 0);
    const inParts = serve.rollout.parts;
    const unit = inParts ? " parts" : "%";
    const totalText = inParts
      ? `<span class="${total > 0 && total <= 100000 ? "muted" : "waiting"}" data-path="${path}.rollout.weights">total ${total} parts</span>`
      : `<span class="${Math.abs(total - 100) < 1e-9 ? "muted" : "waiting"}" data-path="${path}.rollout.weights">total ${+total.toFixed(3)}% of 100%</span>`;
    detail = `<div class="weights">${serve.rollout.weights.map((w, i) => `<div class="weight">
        ${input(`${path}.rollout.weights[${i}].weight`, w.weight, `${what}: weight ${i + 1}, ${inParts ? "parts" : "percent"}`, 'inputmode="decimal" class="number"')}${unit}
        ${select(`${path}.rollout.weights[${i}].variant`, variants, w.variant, `${what}: weight ${i + 1}, variant`)}
        ${button("remove", `${path}.rollout.weights[${i}]`, "✕", `Remove weight ${i + 1} of ${what}`)}</div>`).join("")}
      ${button("add-weight", `${path}.rollout.weights`, "+ variant", `Add a variant to ${what}`)}
      ${totalText}</div>`;
  }
  return `<div class="serve">serve ${kind} ${detail}</div>`;
}

/** The rule editor's fields for `draft`; `segments` are the keys a rule may target. */
export function stateEditorFields(draft, variants, segments) {
  const rules = draft.rules.map((rule, i) => {
    const what = `rule ${i + 1}`;
    const known = [...new Set([...segments, ...rule.segments])];
    const picks = known.map((key) => `<label class="pick"><input type="checkbox" data-path="rules[${i}].segments" value="${escape(key)}"${rule.segments.includes(key) ? " checked" : ""}> ${escape(key)}</label>`).join("")
      || `<span class="muted">no segments yet</span>`;
    return `<fieldset class="rule"><legend>Rule ${i + 1}</legend>
      <div data-path="rules[${i}].segments">In any of the segments (none: everyone) ${picks}</div>
      <div>and every condition holds: ${conditionsEditor(`rules[${i}].conditions`, rule.conditions, what)}</div>
      ${serveEditor(`rules[${i}].serve`, rule.serve, variants, what)}
      <div class="rule-actions">${i > 0 ? button("up", `rules[${i}]`, "↑ earlier", `Move rule ${i + 1} earlier`) : ""}
        ${button("remove", `rules[${i}]`, "Remove rule", `Remove rule ${i + 1}`)}</div>
    </fieldset>`;
  }).join("");
  return `<p class="muted">Rules are tried in order; the first that matches decides.</p>${rules}
    ${button("add-rule", "rules", "+ rule", "Add a rule")}
    <fieldset class="rule"><legend>Everyone else</legend>${serveEditor("fallthrough", draft.fallthrough, variants, "everyone else")}</fieldset>
    <label>Reason ${input("reason", draft.reason, "Reason", "required")}</label>`;
}

/** The segment editor's fields for `draft`. */
export function segmentEditorFields(draft) {
  return `<label>Members, one key per line (a key may hold spaces)
      <textarea data-path="included" rows="4">${escape(draft.included)}</textarea></label>
    <label>Never members, one per line <textarea data-path="excluded" rows="2">${escape(draft.excluded)}</textarea></label>
    <div>Also members: any unit for which every condition holds (none: only the keys above)
      ${conditionsEditor("conditions", draft.conditions, "the segment")}</div>`;
}

// ---- Editing -------------------------------------------------------------------------------

/** What the add buttons add; `variants` are the flag's. */
function added(action, variants) {
  if (action === "add-rule") return { segments: [], conditions: [{ attribute: "", op: "in", values: "" }], serve: serveDraft({ variant: variants[0] }, variants) };
  if (action === "add-condition") return { attribute: "", op: "in", values: "" };
  return { variant: variants[0], weight: "0" };
}

/**
 * Makes `form` edit `draft`: typing writes to the draft, and the buttons add, remove and reorder
 * then call `render` to draw the fields again. Returns nothing; the draft is the state.
 */
export function bindEditor(form, draft, variants, render) {
  form.addEventListener("input", (event) => {
    const path = event.target.dataset.path;
    if (!path) return;
    if (event.target.type === "checkbox") {
      const chosen = [...form.querySelectorAll(`input[type=checkbox][data-path="${path}"]:checked`)].map((box) => box.value);
      write(draft, path, chosen);
    } else {
      write(draft, path, event.target.value);
    }
    // A choice that changes which fields exist, or a weight (the total shows), redraws them.
    if (/(\.kind|\.op|weights\[\d+\]\.weight)$/.test(path)) render(path);
  });
  form.addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    if (!target) return;
    const path = target.dataset.path;
    const action = target.dataset.action;
    if (action === "remove" || action === "up") {
      const list = keys(path);
      const index = list.pop();
      const items = list.reduce((at, key) => at[key], draft);
      const [item] = items.splice(index, 1);
      if (action === "up") items.splice(index - 1, 0, item);
    } else {
      read(draft, path).push(added(action, variants));
    }
    render();
  });
}

/** Draws fields with `fields()` into `container`, keeping the focus on the control at `focus`. */
export function redraw(container, fields, focus) {
  const position = focus && container.querySelector(`[data-path="${focus}"]`)?.selectionStart;
  container.innerHTML = fields();
  if (!focus) return;
  const control = container.querySelector(`[data-path="${focus}"]`);
  control?.focus();
  if (position !== undefined && control?.setSelectionRange) control.setSelectionRange(position, position);
}

/** Builds a body from the draft; a FieldError or an API refusal is shown at the control its path names. */
export async function submitEditor(form, build, send) {
  clearFieldError(form);
  try {
    await send(build());
    return true;
  } catch (failure) {
    showFieldError(form, failure);
    return false;
  }
}

function clearFieldError(form) {
  for (const control of form.querySelectorAll(".field-error")) {
    control.classList.remove("field-error");
    control.removeAttribute("aria-invalid");
  }
  form.querySelector(".error").textContent = "";
}

/** Marks the control whose path is the longest prefix of the refusal's, and says why. */
function showFieldError(form, failure) {
  const path = failure.path ?? "";
  const bounded = (prefix) => path === prefix || path.startsWith(`${prefix}.`) || path.startsWith(`${prefix}[`);
  const controls = [...form.querySelectorAll("[data-path]")].filter((c) => c.dataset.action === undefined && bounded(c.dataset.path));
  const longest = Math.max(0, ...controls.map((c) => c.dataset.path.length));
  for (const control of controls.filter((c) => c.dataset.path.length === longest)) {
    control.classList.add("field-error");
    control.setAttribute("aria-invalid", "true");
  }
  // flag-core's messages start with the path already.
  form.querySelector(".error").textContent = !path || failure.message.includes(path) ? failure.message : `${failure.message} (at ${path})`;
}
