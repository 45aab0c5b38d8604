// The board: every flag of the environment with its exposure, stage and health, the change
// controls (rollout, advance, roll back, kill), active plans, decisions and edges.

import { $, api, attempt, confirmWithReason, describeReading, duration, escape, state, time, toast, VERDICTS } from "./lib.js";

export function scheduleRefresh() {
  clearTimeout(state.refreshing);
  state.refreshing = setTimeout(() => refresh().catch((error) => toast(error.message, true)), 50);
}

export async function refresh() {
  const environment = state.environment;
  const env = encodeURIComponent(environment);
  const [snapshot, plans, decisions, edges] = await Promise.all([
    api("GET", `/api/v1/environments/${env}/snapshot`),
    api("GET", `/api/v1/plans?env=${env}&active=true`),
    api("GET", `/api/v1/decisions?env=${env}`),
    api("GET", "/api/v1/edges"),
  ]);
  const views = await Promise.all(plans.map((plan) => api("GET", `/api/v1/plans/${plan.id}`)));
  if (environment !== state.environment) return;
  const planOf = Object.fromEntries(views.map((view) => [view.flag, view]));
  renderFlags(snapshot.flags, planOf);
  state.plans = views;
  renderPlans(views);
  renderDecisions(decisions.slice(-50).reverse());
  renderEdges(edges.filter((edge) => edge.environment === environment));
}

export function exposure(flag) {
  const serve = flag.fallthrough;
  let shown;
  if (serve.rollout?.percent !== undefined) shown = `${serve.rollout.percent / 1000}% ${serve.rollout.inside}`;
  else if (serve.rollout) shown = "weighted split";
  else shown = `${serve.variant} to everyone`;
  if (flag.rules?.length) shown += ` (${flag.rules.length} rule${flag.rules.length > 1 ? "s" : ""} first)`;
  return flag.enabled === false ? `<span class="killed">KILLED</span> <span class="muted">(was ${escape(shown)})</span>` : escape(shown);
}

function health(flag, plan) {
  if (flag.enabled === false) return `<span class="killed">killed</span>`;
  if (!plan) return `<span class="muted">no plan</span>`;
  const verdicts = plan.readings.map((r) => r.verdict);
  if (verdicts.includes("fail")) return `<span class="breach">guardrail breached</span>`;
  if (verdicts.includes("insufficient")) return `<span class="waiting">insufficient data</span>`;
  return `<span class="healthy">healthy</span>`;
}

function renderFlags(flags, planOf) {
  // What someone is in the middle of typing or sliding survives the live refresh.
  const editing = [...document.querySelectorAll("#flags .change[data-edited]")].map((change) => ({
    flag: change.dataset.flag,
    values: [...change.querySelectorAll("input, select")].map((input) => [input.className, input.value]),
    focused: change.contains(document.activeElement) ? document.activeElement.className : null,
  }));
  $("#flags tbody").innerHTML = flags.map((flag) => {
    const plan = planOf[flag.key];
    const key = escape(flag.key);
    const percent = (flag.fallthrough.rollout?.percent ?? 0) / 1000;
    // Any variant but the off one may be rolled out; the current rollout's comes first.
    const current = flag.fallthrough.rollout?.inside;
    const candidates = Object.keys(flag.variants ?? {}).filter((v) => v !== flag.off_variant)
      .sort((a, b) => (b === current) - (a === current));
    const picker = candidates.length > 1
      ? `<select class="variant" aria-label="Variant of ${key} to roll out">${candidates.map((v) => `<option>${escape(v)}</option>`).join("")}</select>`
      : "";
    const stage = plan
      ? `${escape(plan.stages[plan.stage].name)} <span class="muted">(${plan.stage + 1}/${plan.stages.length}${plan.status === "held" ? ", held" : ""})</span>`
      : escape(flag.fallthrough.rollout?.stage ?? "—");
    const change = plan
      ? `<div class="change" data-flag="${key}" data-plan="${plan.id}">
           <input type="text" class="reason" placeholder="reason (required)" aria-label="Reason for ${key}">
           <button class="advance primary" disabled ${plan.stage + 1 >= plan.stages.length ? 'title="last stage"' : ""}>Advance</button>
           <button class="rollback" disabled>Roll back</button>
         </div>`
      : `<div class="change" data-flag="${key}">
           ${picker}
           <input type="range" class="slider" min="0" max="100" step="0.1" value="${percent}" aria-label="Rollout of ${key}">
           <span class="percent">${percent}%</span>
           <input type="text" class="reason" placeholder="reason (required)" aria-label="Reason for ${key}">
           <button class="apply primary" disabled>Apply</button>
         </div>`;
    const kill = flag.enabled === false
      ? `<button class="unkill" data-flag="${key}">Unkill</button>`
      : `<button class="kill danger" data-flag="${key}">Kill</button>`;
    return `<tr data-flag="${key}"><td><a href="#/flags/${encodeURIComponent(flag.key)}"><strong>${key}</strong></a></td><td class="exposure">${exposure(flag)}</td>
      <td class="stage">${stage}</td><td class="health">${health(flag, plan)}</td><td>${change}</td><td>${kill}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">No flags in this environment.</td></tr>`;
  for (const { flag, values, focused } of editing) {
    const change = document.querySelector(`#flags .change[data-flag="${CSS.escape(flag)}"]`);
    if (!change) continue;
    change.dataset.edited = "";
    for (const [className, value] of values) {
      const input = change.querySelector(`[class="${className}"]`);
      if (input) input.value = value;
    }
    if (focused) change.querySelector(`[class="${focused}"]`)?.focus();
    showEdit(change);
  }
}

function renderPlans(views) {
  $("#plans").innerHTML = views.map((plan) => planView(plan)).join("")
    || `<p class="muted">No active plan in this environment.</p>`;
}

/** A plan's timeline and readings; `why` is shown for a plan that has ended or is held. */
export function planView(plan, why = "") {
    const stages = plan.stages.map((stage, index) => {
      const place = index < plan.stage ? "done" : index === plan.stage ? "current" : "";
      const audience = [...(stage.segments ?? []), `${stage.percent}%`].join(" + ");
      return `<div class="stage ${place}"><strong>${escape(stage.name)}</strong><small>${escape(audience)}</small>
        <small>hold ${duration(stage.hold_seconds)}</small></div>`;
    }).join("");
    const readings = (plan.readings ?? []).map((r) =>
      `<li>${escape(describeReading(r))} <span class="${r.verdict}">${escape(VERDICTS[r.verdict] ?? r.verdict)}</span></li>`).join("");
    const ended = plan.status === "rolled_back" || plan.status === "completed";
    return `<div class="plan" data-plan="${plan.id}">
      <div><strong>${escape(plan.flag)}</strong> plan ${plan.id} in ${escape(plan.environment)}, <span class="${plan.status}">${escape(plan.status.replace("_", " "))}</span>,
        ${ended ? `started ${time(plan.created_at)}` : `${plan.auto_advance ? "advances on its own" : "advances by hand"}; hold until ${plan.hold_until ? time(plan.hold_until) : "—"}`}</div>
      <div class="timeline">${stages}</div>
      ${why ? `<p class="why">${escape(why)}</p>` : ""}
      ${ended ? "" : `<ul>${readings || "<li class=muted>no guardrails</li>"}</ul>`}</div>`;
}

function renderDecisions(decisions) {
  $("#decisions tbody").innerHTML = decisions.map((d) => {
    const stage = d.from_stage && d.to_stage && d.from_stage !== d.to_stage ? `${d.from_stage}→${d.to_stage}` : (d.to_stage ?? d.from_stage ?? "");
    const decision = { proceed: "pass", hold: "held", rollback: "fail" }[d.decision] ?? "";
    return `<tr><td>${time(d.at)}</td><td>${escape(d.flag)}</td><td>${escape(stage)}</td>
      <td class="${decision}">${escape(d.decision)}</td><td>${escape(d.decided_by)}</td><td>${escape(d.rationale)}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">No decisions yet.</td></tr>`;
}

function renderEdges(edges) {
  $("#edges tbody").innerHTML = edges.map((e) => {
    const lag = e.lag === null ? `<span class="waiting">never synced</span>` : e.lag === 0 ? `<span class="healthy">0</span>` : `<span class="waiting">${e.lag}</span>`;
    return `<tr><td>${escape(e.name)}</td><td>${escape(e.environment)}</td><td>${escape(e.applied_version ?? "—")}</td>
      <td>${lag}</td><td>${e.acked_at ? time(e.acked_at) : "—"}</td><td class="error">${escape(e.last_error ?? "")}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">No edges in this environment.</td></tr>`;
}

/** Runs a change; on success, `edited` (the control it came from) is no longer being edited. */
export async function act(work, done, edited) {
  if (!(await attempt(work, done))) return;
  if (edited) delete edited.dataset.edited;
  await refresh().catch((error) => toast(error.message, true));
}

function flagPath(flag, action) {
  return `/api/v1/environments/${encodeURIComponent(state.environment)}/flags/${encodeURIComponent(flag)}/${action}`;
}

/** A change control's label and buttons as its inputs say. */
function showEdit(change) {
  const slider = change.querySelector(".slider");
  if (slider) change.querySelector(".percent").textContent = `${slider.value}%`;
  const reason = change.querySelector(".reason").value.trim();
  change.querySelectorAll("button").forEach((button) => (button.disabled = !reason));
}

document.addEventListener("input", (event) => {
  const change = event.target.closest(".change");
  if (!change) return;
  change.dataset.edited = "";
  showEdit(change);
});

// The board's buttons: each acts on the flag of its row in the current environment.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("#flags button");
  if (!button) return;
  const change = button.closest(".change");
  const flag = button.dataset.flag ?? change?.dataset.flag;
  const reason = change?.querySelector(".reason").value.trim();
  if (button.classList.contains("apply")) {
    const percent = Number(change.querySelector(".slider").value);
    const variant = change.querySelector(".variant")?.value;
    await act(() => api("PUT", flagPath(flag, "rollout"), { percent, variant, reason }),
      `${flag} is at ${percent}%${variant ? ` ${variant}` : ""} in ${state.environment}`, change);
  } else if (button.classList.contains("advance")) {
    // A person moving a plan on sees what the guardrails say first.
    const plan = state.plans?.find((p) => String(p.id) === change.dataset.plan);
    const next = plan?.stages[plan.stage + 1]?.name ?? "the next stage";
    const readings = (plan?.readings ?? []).map((r) => `${describeReading(r)}, ${VERDICTS[r.verdict] ?? r.verdict}`).join("; ");
    const why = await confirmWithReason(`Advance ${flag} to ${next} in ${state.environment}?`,
      `Guardrails now: ${readings || "none"}.`, "Advance", reason);
    if (why) await act(() => api("POST", `/api/v1/plans/${change.dataset.plan}/advance`, { rationale: why }), `${flag}: advance recorded`, change);
  } else if (button.classList.contains("rollback")) {
    await act(() => api("POST", `/api/v1/plans/${change.dataset.plan}/rollback`, { rationale: reason }), `${flag} rolled back one stage`, change);
  } else if (button.classList.contains("kill")) {
    const why = await confirmWithReason(`Kill ${flag} in ${state.environment}?`,
      "Everyone gets the flag's off variant at once, at every edge.", "Kill");
    if (why) await act(() => api("POST", flagPath(flag, "kill"), { reason: why }), `${flag} killed in ${state.environment}`);
  } else if (button.classList.contains("unkill")) {
    const why = await confirmWithReason(`Unkill ${flag} in ${state.environment}?`,
      "The flag's rules and rollout apply again.", "Unkill");
    if (why) await act(() => api("POST", flagPath(flag, "unkill"), { reason: why }), `${flag} unkilled`);
  }
});

