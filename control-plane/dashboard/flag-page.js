// A flag's page (definition, states with their rules, plans, guardrail charts, decisions,
// history) and the new-flag form.

import { $, api, escape, percent, points, read, state, time, toast, VERDICTS } from "./lib.js";
import { act, exposure, planView } from "./board.js";
import { bindEditor, redraw, stateDraft, stateEditorFields, stateOut, submitEditor } from "./rules.js";

export function describeServe(serve) {
  if (serve.variant !== undefined) return serve.variant;
  const rollout = serve.rollout ?? {};
  const stage = rollout.stage ? ` (${rollout.stage})` : "";
  const inside = rollout.inside ?? (rollout.weights ?? []).map((w) => w.variant).join(" or ");
  if (rollout.percent !== undefined) return `${rollout.percent / 1000}% ${inside}, the rest ${rollout.outside}${stage}`;
  // Shares of the weights' total: 100000 under rg1, any total under an imported algorithm.
  const total = (rollout.weights ?? []).reduce((sum, w) => sum + w.weight, 0) || 1;
  const share = (w) => +((w.weight * 100) / total).toFixed(3);
  return (rollout.weights ?? []).map((w) => `${share(w)}% ${w.variant}`).join(", ") + stage;
}

/** `if in segment staff and country in SE, NO → new`. */
export function describeRule(rule) {
  const parts = [
    ...(rule.segments ?? []).map((segment) => `in segment ${segment}`),
    ...(rule.conditions ?? []).map((c) => `${c.attribute} ${c.op.replaceAll("_", " ")} ${(c.values ?? []).join(", ")}`),
  ];
  return `if ${parts.join(" and ") || "always"} → ${describeServe(rule.serve)}`;
}

export async function showFlag(key) {
  // Nothing of the flag shown before stays while this one loads.
  $("#flag-title").textContent = "";
  for (const id of ["#flag-about", "#flag-states", "#flag-plans", "#flag-charts"]) $(id).innerHTML = "";
  const k = encodeURIComponent(key);
  const { data: flag, etag } = await read(`/api/v1/flags/${k}`);
  // The revision the edit forms send back as If-Match: read with the flag, never shared.
  state.flagRevision = etag;
  const [plans, decisions, audit, segments] = await Promise.all([
    api("GET", `/api/v1/plans?flag=${k}`),
    api("GET", `/api/v1/decisions?flag=${k}&order=newest&limit=20`),
    api("GET", `/api/v1/audit?flag=${k}&order=newest&limit=20`),
    api("GET", "/api/v1/segments"),
  ]);
  const variants = Object.entries(flag.variants)
    .map(([name, value]) => `<code>${escape(name)}</code> = <code>${escape(JSON.stringify(value))}</code>`).join(", ");
  $("#flag-about").innerHTML = `<p>${escape(flag.description || "No description.")}</p>
    <p>${escape(flag.type)}, variants ${variants}; off: <code>${escape(flag.off_variant)}</code></p>
    <p>Owner: ${escape(flag.owner || "—")} · Tags: ${escape((flag.tags ?? []).join(", ") || "—")} ·
      ${flag.client_visible ? "browsers may evaluate it" : "servers only"} ·
      created ${time(flag.created_at)} · changed ${time(flag.updated_at)}</p>
    <details id="edit-flag"><summary>Edit the definition</summary>
      <form class="card-form">
        <label>Type <select name="type">${["boolean", "string", "number", "object"].map((t) => `<option${t === flag.type ? " selected" : ""}>${t}</option>`).join("")}</select></label>
        <label>Variants, one per line as name=JSON <textarea name="variants" rows="3">${escape(Object.entries(flag.variants).map(([n, v]) => `${n}=${JSON.stringify(v)}`).join("\n"))}</textarea></label>
        <label>Off variant <input name="off_variant" value="${escape(flag.off_variant)}" autocomplete="off"></label>
        <label>Description <input name="description" value="${escape(flag.description ?? "")}" autocomplete="off"></label>
        <label>Owner <input name="owner" value="${escape(flag.owner ?? "")}" autocomplete="off"></label>
        <label>Tags, comma-separated <input name="tags" value="${escape((flag.tags ?? []).join(", "))}" autocomplete="off"></label>
        <label class="check"><input type="checkbox" name="client_visible"${flag.client_visible ? " checked" : ""}> Browsers may evaluate it (client tokens)</label>
        <p class="error" role="alert"></p>
        <button type="submit" class="primary">Save</button>
      </form>
    </details>`;
  state.templates ??= await api("GET", "/api/v1/plan-templates");
  const canary = state.templates.find((t) => t.name === "canary");
  const active = new Set(plans.filter((p) => p.status === "running" || p.status === "held").map((p) => p.environment));
  $("#flag-states").innerHTML = Object.entries(flag.environments).map(([environment, st]) => {
    const needs = (st.prerequisites ?? []).map((p) => `${escape(p.flag)} serving ${escape(p.variant)}`).join(" and ");
    const rules = (st.rules ?? []).map((rule) => `<li>${escape(describeRule(rule))}</li>`).join("");
    // A canary plan may start here unless one is active; a plan never lowers exposure, so it
    // may start at a later stage.
    const start = active.has(environment) || !canary ? "" : `<form class="start-plan inline" data-environment="${escape(environment)}">
        <label>Start the canary plan at
          <select name="start_at">${canary.stages.map((s) => `<option value="${escape(s.name)}">${escape(s.name)} (${s.percent}%)</option>`).join("")}</select></label>
        <label>Reason <input name="reason" required autocomplete="off"></label>
        <button type="submit">Start</button></form>`;
    return `<div class="state"><strong>${escape(environment)}</strong>: ${exposure(st)}
      ${needs ? `<div>Only while ${needs}.</div>` : ""}
      <ol class="rules">${rules}<li>otherwise ${escape(describeServe(st.fallthrough))}</li></ol>${start}
      <details class="edit-state"><summary>Edit the rules in ${escape(environment)}</summary>
        <form class="rule-editor" data-environment="${escape(environment)}"><div class="fields"></div>
          <p class="error" role="alert"></p>
          <button type="submit" class="primary">Save the rules in ${escape(environment)}</button></form></details></div>`;
  }).join("");
  for (const form of document.querySelectorAll("#flag-states form.rule-editor")) {
    editRules(form, flag, flag.environments[form.dataset.environment], segments.map((s) => s.key), etag);
  }
  state.flag = flag.key;
  // Why each plan that is not running stands where it does: its last decision.
  const last = await Promise.all(plans.map((plan) => plan.status === "running"
    ? null : api("GET", `/api/v1/decisions?plan=${plan.id}&order=newest&limit=1`).then((d) => d[0])));
  $("#flag-plans").innerHTML = plans.map((plan, i) => planView(plan,
    last[i] ? `${last[i].action} by ${last[i].decided_by}: ${last[i].rationale}` : "")).join("")
    || `<p class="muted">No rollout plans for this flag.</p>`;
  await showCharts(flag.key, plans);
  $("#flag-decisions tbody").innerHTML = decisions.map((d) => `<tr><td>${time(d.at)}</td><td>${escape(d.environment)}</td>
      <td>${escape(d.to_stage ?? d.from_stage ?? "")}</td><td>${escape(d.decision)}</td><td>${escape(d.decided_by)}</td><td>${escape(d.rationale)}</td></tr>`).join("")
    || `<tr><td colspan="6" class="muted">No decisions.</td></tr>`;
  $("#flag-audit tbody").innerHTML = audit.map((r) => `<tr><td>${time(r.at)}</td><td>${escape(r.actor)}</td>
      <td>${escape(r.action)}</td><td>${escape(r.environment ?? "—")}</td><td>${escape(r.reason ?? "")}</td></tr>`).join("");
  // Last: the title says the whole page is this flag's.
  $("#flag-title").textContent = flag.key;
}

/**
 * Makes `form` edit the flag's rules and fallthrough in its environment, saved with If-Match
 * `revision`, the one read with `flag`.
 */
function editRules(form, flag, flagState, segments, revision) {
  const environment = form.dataset.environment;
  const variants = Object.keys(flag.variants);
  const draft = stateDraft(flagState, variants);
  const fields = form.querySelector(".fields");
  const render = (focus) => redraw(fields, () => stateEditorFields(draft, variants, segments), focus);
  bindEditor(form, draft, variants, render);
  render();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const path = `/api/v1/environments/${encodeURIComponent(environment)}/flags/${encodeURIComponent(flag.key)}`;
    const saved = await submitEditor(form, () => stateOut(draft, flagState), (body) =>
      api("PUT", path, body, revision).catch((failure) => {
        if (failure.status === 412) failure.message = "Someone changed this flag since you opened it: reload the page to see their change.";
        throw failure;
      }));
    if (!saved) return;
    toast(`${flag.key}: rules saved in ${environment}`);
    await showFlag(flag.key);
  });
}

/** Draws the guardrail charts of `key`'s page again, with the metrics reported since. */
export async function refreshCharts(key) {
  const plans = await api("GET", `/api/v1/plans?flag=${encodeURIComponent(key)}`);
  if (state.flag === key && !$("#flag-page").hidden) await showCharts(key, plans);
}

/**
 * For each environment's latest plan, a chart per guardrail of its current stage. A fixed
 * bound: the rate (metric per unit, summed from the plan's start) for the plan's variant and its
 * control, minute by minute, and the limit. A sequential criterion: the variant's rate minus the
 * control's over the stage, with its always-valid interval and the tolerance, as the control
 * plane read it over time. And the sample-ratio check's share with its interval, where the
 * stage splits traffic.
 */
async function showCharts(key, plans) {
  const latest = new Map();
  for (const plan of plans) if (!latest.has(plan.environment)) latest.set(plan.environment, plan);
  const charts = [];
  for (const plan of latest.values()) {
    const guardrails = plan.stages[plan.stage].guardrails ?? [];
    const history = await readingsOf(plan);
    guardrails.forEach((guardrail, index) => {
      if (guardrail.max_increase === undefined && guardrail.max_relative_increase === undefined) return;
      charts.push(intervalChart(plan, guardrail, history.map((p) => ({ at: p.at, reading: p.readings[index] }))));
    });
    const ratio = history.map((p) => ({ at: p.at, reading: p.readings.find((r) => r.share) }));
    if (ratio.some((p) => p.reading)) charts.push(intervalChart(plan, null, ratio));
    const fixed = guardrails.filter((g) => g.max_increase === undefined && g.max_relative_increase === undefined);
    if (!fixed.length) continue;
    const age = Math.ceil((Date.now() - new Date(plan.created_at).getTime()) / 1000);
    const window = Math.min(259200, Math.max(3600, age + 60));
    const sums = await api("GET", `/api/v1/environments/${encodeURIComponent(plan.environment)}/metrics?flag=${encodeURIComponent(key)}&window_seconds=${window}&by_minute=true`);
    for (const guardrail of fixed) charts.push(chart(plan, guardrail, sums.minutes ?? []));
  }
  $("#flag-charts").innerHTML = charts.join("") || `<p class="muted">No plan with guardrails.</p>`;
}

/** An ended plan's readings over time never change: read once per page load. */
const endedHistories = new Map();

async function readingsOf(plan) {
  const ended = plan.status === "rolled_back" || plan.status === "completed";
  if (ended && endedHistories.has(plan.id)) return endedHistories.get(plan.id);
  const history = await api("GET", `/api/v1/plans/${plan.id}/readings`);
  if (ended) endedHistories.set(plan.id, history);
  return history;
}

/**
 * An estimate over time with its always-valid interval as a band, like a guarded rollout's
 * tile: a sequential guardrail's rise over control against its tolerance (`guardrail`), or the
 * sample ratio's share against the stage's split (`guardrail` null). `series` holds `{at,
 * reading}`, oldest first.
 */
function intervalChart(plan, guardrail, series) {
  const ratio = guardrail === null;
  const name = ratio ? "sample ratio" : `${guardrail.metric}/${guardrail.per}`;
  const title = series.findLast((p) => p.reading)?.reading.criterion ?? name;
  const of = (reading) => (ratio ? reading?.share : reading?.difference);
  const known = series.filter((p) => of(p.reading));
  const figure = (words, drawing) => `<figure class="chart interval${ratio ? " ratio" : ""}" data-guardrail="${escape(name)}" data-environment="${escape(plan.environment)}">
    ${drawing(`${title} in ${plan.environment}: ${words.join(", ")}`)}
    <figcaption class="legend"><strong>${escape(title)}</strong> in ${escape(plan.environment)}:
      ${words.map((text) => `<span>${escape(text)}</span>`).join("")}</figcaption>
  </figure>`;
  if (!known.length) return figure(["no data yet"], () => "");

  const [width, height, pad] = [600, 180, 32];
  const reference = (p) => (ratio ? of(p.reading).expected : of(p.reading).tolerated);
  // Scaled to the reference and the settled estimates, not to the first minutes' wide
  // intervals, which are clipped: what matters is where the band ends up against the line.
  const references = known.map(reference);
  const estimates = known.map((p) => of(p.reading).estimate).slice(Math.floor(known.length / 5));
  const scale = Math.max(...references.map(Math.abs), ratio ? 0.01 : 0.001);
  const bottom = Math.min(ratio ? Math.min(...references) - scale / 2 : -scale, ...estimates);
  const top = Math.max(ratio ? Math.max(...references) + scale / 2 : 2 * scale, ...estimates);
  const span = (top - bottom) * 1.1;
  const x = (i) => pad + (series.length > 1 ? (i * (width - 2 * pad)) / (series.length - 1) : (width - 2 * pad) / 2);
  const clip = (value) => Math.min(bottom + span, Math.max(bottom, value));
  const y = (value) => height - pad - ((clip(value) - bottom) / span) * (height - 2 * pad);
  const index = new Map(series.map((p, i) => [p, i]));
  const coordinates = (points, field) => points.map((p) => `${x(index.get(p)).toFixed(1)},${y(field(p)).toFixed(1)}`).join(" ");
  const band = `${coordinates(known, (p) => of(p.reading).high)} ${coordinates([...known].reverse(), (p) => of(p.reading).low)}`;

  const now = of(known.at(-1).reading);
  const format = ratio ? percent : points;
  const words = [
    `now ${format(now.estimate)} (${format(now.low).replace(" points", "")} to ${format(now.high)} at ${percent(now.confidence)})`,
    ratio ? `configured ${percent(now.expected)}` : `tolerance ${points(now.tolerated)}`,
    VERDICTS[known.at(-1).reading.verdict] ?? known.at(-1).reading.verdict,
  ];
  const when = (point) => escape(new Date(point.at).toLocaleString());
  return figure(words, (summary) => `<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${escape(summary)}"><title>${escape(summary)}</title>
      <polygon class="band" points="${band}"/>
      ${ratio ? "" : `<line class="zero" x1="${pad}" x2="${width - pad}" y1="${y(0).toFixed(1)}" y2="${y(0).toFixed(1)}"/>`}
      <polyline class="limit" fill="none" points="${coordinates(known, reference)}"/>
      <polyline class="estimate" fill="none" stroke-width="2" points="${coordinates(known, (p) => of(p.reading).estimate)}"/>
      <text x="${pad}" y="${pad - 10}" font-size="11" fill="#475467">${escape(format(bottom + span))}</text>
      <text x="${pad}" y="${height - 8}" font-size="11" fill="#475467">${when(series[0])}</text>
      <text x="${width - pad}" y="${height - 8}" font-size="11" fill="#475467" text-anchor="end">${when(series.at(-1))}</text>
    </svg>`);
}

/** Cumulative rate of `metric` per `per` for `variant`, at each minute. */
function rates(minutes, variant, metric, per) {
  let [counted, units] = [0, 0];
  return minutes.map((m) => {
    counted += m.variants[variant]?.[metric] ?? 0;
    units += m.variants[variant]?.[per] ?? 0;
    return units ? counted / units : null;
  });
}

function chart(plan, guardrail, minutes) {
  const [width, height, pad] = [600, 160, 28];
  const name = `${guardrail.metric}/${guardrail.per}`;
  const lines = [["variant", plan.variant], ["control", plan.control]]
    .map(([role, variant]) => [role, variant, rates(minutes, variant, guardrail.metric, guardrail.per)]);
  const known = lines.flatMap(([, , series]) => series.filter((r) => r !== null));
  const top = Math.max(0.01, guardrail.max ?? 0, ...known) * 1.25;
  const x = (i) => pad + (minutes.length > 1 ? (i * (width - 2 * pad)) / (minutes.length - 1) : (width - 2 * pad) / 2);
  const y = (rate) => height - pad - (rate / top) * (height - 2 * pad);
  const polyline = ([role, , series]) => {
    const coordinates = series.map((r, i) => (r === null ? null : `${x(i).toFixed(1)},${y(r).toFixed(1)}`)).filter(Boolean);
    if (!coordinates.length) return "";
    // The latest reading as a dot, so even a single minute shows.
    const [cx, cy] = coordinates.at(-1).split(",");
    return `<polyline class="${role}" fill="none" stroke-width="2" points="${coordinates.join(" ")}"/>
      <circle class="${role}" cx="${cx}" cy="${cy}" r="3.5" fill="white" stroke-width="2"/>`;
  };
  const rateText = (rate) => (rate === null || rate === undefined ? "no data" : `${(100 * rate).toFixed(2)}%`);
  const now = lines.map(([role, variant, series]) => `${role} ${variant}: ${rateText(series.at(-1))}`);
  const limit = guardrail.max !== undefined
    ? `<line class="limit" x1="${pad}" x2="${width - pad}" y1="${y(guardrail.max)}" y2="${y(guardrail.max)}"/>` : "";
  const summary = `${name} in ${plan.environment} since the plan started: ${now.join(", ")}${guardrail.max !== undefined ? `, limit ${rateText(guardrail.max)}` : ""}`;
  return `<figure class="chart" data-guardrail="${escape(name)}" data-environment="${escape(plan.environment)}">
    <svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${escape(summary)}"><title>${escape(summary)}</title>
      <line x1="${pad}" x2="${width - pad}" y1="${height - pad}" y2="${height - pad}" stroke="#d0d5dd"/>
      ${limit}${lines.map(polyline).join("")}
      <text x="${pad}" y="${pad - 8}" font-size="11" fill="#475467">${escape(rateText(top))}</text>
      <text x="${pad}" y="${height - 8}" font-size="11" fill="#475467">${minutes.length ? escape(new Date(minutes[0].at).toLocaleTimeString()) : ""}</text>
    </svg>
    <figcaption class="legend"><strong>${escape(name)}</strong> in ${escape(plan.environment)}:
      ${now.map((text) => `<span>${escape(text)}</span>`).join("")}${guardrail.max !== undefined ? `<span>limit ${rateText(guardrail.max)}</span>` : ""}</figcaption>
  </figure>`;
}

// Editing a flag's definition: sent with If-Match, so someone else's change is not overwritten.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("#edit-flag form");
  if (!form) return;
  event.preventDefault();
  const key = $("#flag-title").textContent;
  const error = form.querySelector(".error");
  clearFormError(form, error);
  try {
    await api("PUT", `/api/v1/flags/${encodeURIComponent(key)}`, flagFromForm(form, key), state.flagRevision);
    toast(`${key} saved`);
    await showFlag(key);
  } catch (failure) {
    showFormError(form, error, failure.status === 412
      ? new Error("Someone changed this flag since you opened it: reload the page to see their change.")
      : failure);
  }
});

// Starting a plan from a flag's page; a refusal (say, it would lower exposure) names the stage.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.start-plan");
  if (!form) return;
  event.preventDefault();
  const environment = form.dataset.environment;
  const startAt = form.elements.namedItem("start_at").value;
  const body = { flag: state.flag, environment, template: "canary",
    rationale: form.elements.namedItem("reason").value.trim(), start_at: startAt };
  await act(async () => { await api("POST", "/api/v1/plans", body); await showFlag(state.flag); },
    `${state.flag}: canary plan started at ${startAt} in ${environment}`);
});

/** `name=JSON` lines as a variants object; throws naming the line that does not parse. */
function parseVariants(text) {
  const variants = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`"${line}" is not name=JSON`);
    try {
      variants[line.slice(0, at).trim()] = JSON.parse(line.slice(at + 1));
    } catch {
      throw new Error(`the value of ${line.slice(0, at).trim()} is not JSON (a string needs quotes: "text")`);
    }
  }
  return variants;
}

/** A flag definition from a new-flag or edit form's fields; `key` if the form has none. */
function flagFromForm(form, key) {
  const field = (name) => form.elements.namedItem(name);
  return {
    key: key ?? field("key").value.trim(),
    type: field("type").value,
    variants: parseVariants(field("variants").value),
    off_variant: field("off_variant").value.trim(),
    description: field("description").value.trim(),
    owner: field("owner").value.trim(),
    tags: field("tags").value.split(",").map((t) => t.trim()).filter(Boolean),
    client_visible: field("client_visible").checked,
  };
}

function clearFormError(form, error) {
  for (const element of form.querySelectorAll(".field-error")) element.classList.remove("field-error");
  error.textContent = "";
}

/** A refusal under the form, with the field its path (e.g. `variants.on`) names highlighted. */
function showFormError(form, error, failure) {
  const name = (failure.path ?? "").split(".")[0] || (failure.message.includes("value of") ? "variants" : "");
  form.elements.namedItem(name)?.classList?.add("field-error");
  error.textContent = failure.path ? `${failure.message} (at ${failure.path})` : failure.message;
}

$("#new-flag").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  clearFormError(form, $("#new-flag-error"));
  try {
    const flag = flagFromForm(form);
    await api("POST", "/api/v1/flags", flag);
    toast(`${flag.key} created: it serves ${flag.off_variant} everywhere`);
    form.reset();
    location.hash = `#/flags/${encodeURIComponent(flag.key)}`;
  } catch (failure) {
    showFormError(form, $("#new-flag-error"), failure);
  }
});
