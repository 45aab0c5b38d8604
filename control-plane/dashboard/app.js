// The dashboard: plain JavaScript over the HTTP API (docs/api.md), served by the control plane.
// The token stays in sessionStorage; every request sends it as a bearer token. The environment's
// snapshot stream (read through fetch, since EventSource cannot send headers) triggers refreshes.

const $ = (selector) => document.querySelector(selector);
const escape = (text) =>
  String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const state = { token: sessionStorage.getItem("rollgate-token"), environment: null, stream: null, refreshing: null };

/** Calls the API; throws an Error carrying the problem's detail. */
async function api(method, path, body, ifMatch) {
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${state.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
      ...(ifMatch ? { "if-match": ifMatch } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  state.etag = response.headers.get("etag");
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(data?.detail ?? `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.path = data?.path;
    throw error;
  }
  return data;
}

function toast(message, isError = false) {
  const item = document.createElement("div");
  item.textContent = message;
  if (isError) item.className = "error";
  $("#toast").append(item);
  setTimeout(() => item.remove(), isError ? 8000 : 4000);
}

/** Asks for a reason in a modal; resolves to it, or to null if cancelled. */
function confirmWithReason(title, text, action, reason = "") {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = action;
  $("#confirm-reason").value = reason;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const reason = $("#confirm-reason").value.trim();
      resolve(dialog.returnValue === "ok" && reason ? reason : null);
    }, { once: true });
  });
}

// ---- Session -------------------------------------------------------------------------------

async function logIn(token) {
  state.token = token;
  const environments = await api("GET", "/api/v1/environments");
  sessionStorage.setItem("rollgate-token", token);
  const select = $("#environment");
  select.innerHTML = environments.map((e) => `<option>${escape(e.name)}</option>`).join("");
  const preferred = environments.find((e) => e.name === "production") ?? environments[0];
  select.value = preferred?.name ?? "";
  $("#login").hidden = true;
  $("#session").hidden = false;
  await switchEnvironment(select.value);
  await route();
}

function logOut() {
  sessionStorage.removeItem("rollgate-token");
  state.stream?.abort();
  location.reload();
}

async function switchEnvironment(environment) {
  state.environment = environment;
  // Production looks different, so nobody changes it thinking it is staging.
  document.body.classList.toggle("production", environment === "production");
  document.body.dataset.environment = environment;
  state.stream?.abort();
  watch(environment);
  await refresh();
}

/** Follows the environment's snapshot stream; any event refreshes the board. */
async function watch(environment) {
  const controller = new AbortController();
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`/api/v1/environments/${encodeURIComponent(environment)}/stream`, {
        headers: { authorization: `Bearer ${state.token}` },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`stream: ${response.status}`);
      $("#live").classList.remove("off");
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        // Keep-alive comments start with ":"; events carry "data:".
        if (new TextDecoder().decode(value).includes("data:")) scheduleRefresh();
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    $("#live").classList.add("off");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshing);
  state.refreshing = setTimeout(() => refresh().catch((error) => toast(error.message, true)), 50);
}

// ---- Data ----------------------------------------------------------------------------------

async function refresh() {
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

// ---- Pages ---------------------------------------------------------------------------------

/** Shows the page the URL's fragment names: #/ (the board), #/flags/<key>, #/new-flag, #/tokens. */
async function route() {
  if ($("#session").hidden) return;
  const [, page, key] = location.hash.split("/");
  for (const element of document.querySelectorAll(".page")) element.hidden = true;
  try {
    if (page === "flags" && key) {
      $("#flag-page").hidden = false;
      await showFlag(decodeURIComponent(key));
    } else if (page === "new-flag") {
      $("#new-flag").hidden = false;
    } else if (page === "tokens") {
      $("#tokens-page").hidden = false;
      await showTokens();
    } else if (page === "segments") {
      $("#segments-page").hidden = false;
      await showSegments();
    } else if (page === "settings") {
      $("#settings-page").hidden = false;
      await showSettings();
    } else {
      $("#board").hidden = false;
    }
  } catch (error) {
    toast(error.message, true);
  }
}

function describeServe(serve) {
  if (serve.variant !== undefined) return serve.variant;
  const rollout = serve.rollout ?? {};
  const stage = rollout.stage ? ` (${rollout.stage})` : "";
  if (rollout.percent !== undefined) return `${rollout.percent / 1000}% ${rollout.inside}, the rest ${rollout.outside}${stage}`;
  return (rollout.weights ?? []).map((w) => `${w.weight / 1000}% ${w.variant}`).join(", ") + stage;
}

/** `if in segment staff and country in SE, NO → new`. */
function describeRule(rule) {
  const parts = [
    ...(rule.segments ?? []).map((segment) => `in segment ${segment}`),
    ...(rule.conditions ?? []).map((c) => `${c.attribute} ${c.op.replaceAll("_", " ")} ${(c.values ?? []).join(", ")}`),
  ];
  return `if ${parts.join(" and ") || "always"} → ${describeServe(rule.serve)}`;
}

async function showFlag(key) {
  // Nothing of the flag shown before stays while this one loads.
  $("#flag-title").textContent = "";
  for (const id of ["#flag-about", "#flag-states", "#flag-plans", "#flag-charts"]) $(id).innerHTML = "";
  const k = encodeURIComponent(key);
  const flag = await api("GET", `/api/v1/flags/${k}`);
  // The revision the edit form sends back as If-Match.
  state.flagRevision = state.etag;
  const [plans, decisions, audit] = await Promise.all([
    api("GET", `/api/v1/plans?flag=${k}`),
    api("GET", `/api/v1/decisions?flag=${k}&order=newest&limit=20`),
    api("GET", `/api/v1/audit?flag=${k}&order=newest&limit=20`),
  ]);
  const variants = Object.entries(flag.variants)
    .map(([name, value]) => `<code>${escape(name)}</code> = <code>${escape(JSON.stringify(value))}</code>`).join(", ");
  $("#flag-about").innerHTML = `<p>${escape(flag.description || "No description.")}</p>
    <p>${escape(flag.type)}, variants ${variants}; off: <code>${escape(flag.off_variant)}</code></p>
    <p>Owner: ${escape(flag.owner || "—")} · Tags: ${escape((flag.tags ?? []).join(", ") || "—")} ·
      created ${time(flag.created_at)} · changed ${time(flag.updated_at)}</p>
    <details id="edit-flag"><summary>Edit the definition</summary>
      <form class="card-form">
        <label>Type <select name="type">${["boolean", "string", "number", "object"].map((t) => `<option${t === flag.type ? " selected" : ""}>${t}</option>`).join("")}</select></label>
        <label>Variants, one per line as name=JSON <textarea name="variants" rows="3">${escape(Object.entries(flag.variants).map(([n, v]) => `${n}=${JSON.stringify(v)}`).join("\n"))}</textarea></label>
        <label>Off variant <input name="off_variant" value="${escape(flag.off_variant)}" autocomplete="off"></label>
        <label>Description <input name="description" value="${escape(flag.description ?? "")}" autocomplete="off"></label>
        <label>Owner <input name="owner" value="${escape(flag.owner ?? "")}" autocomplete="off"></label>
        <label>Tags, comma-separated <input name="tags" value="${escape((flag.tags ?? []).join(", "))}" autocomplete="off"></label>
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
      <ol class="rules">${rules}<li>otherwise ${escape(describeServe(st.fallthrough))}</li></ol>${start}</div>`;
  }).join("");
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
 * For each environment's latest plan, a chart per guardrail: the rate (metric per unit, summed
 * from the plan's start) for the plan's variant and its control, minute by minute, and the limit.
 */
async function showCharts(key, plans) {
  const latest = new Map();
  for (const plan of plans) if (!latest.has(plan.environment)) latest.set(plan.environment, plan);
  const charts = [];
  for (const plan of latest.values()) {
    const guardrails = (plan.stages[plan.stage].guardrails ?? []).filter((g) => g.metric && g.per);
    if (!guardrails.length) continue;
    const age = Math.ceil((Date.now() - new Date(plan.created_at).getTime()) / 1000);
    const window = Math.min(259200, Math.max(3600, age + 60));
    const sums = await api("GET", `/api/v1/environments/${encodeURIComponent(plan.environment)}/metrics?flag=${encodeURIComponent(key)}&window_seconds=${window}&by_minute=true`);
    for (const guardrail of guardrails) charts.push(chart(plan, guardrail, sums.minutes ?? []));
  }
  $("#flag-charts").innerHTML = charts.join("") || `<p class="muted">No plan with guardrails.</p>`;
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
    const points = series.map((r, i) => (r === null ? null : `${x(i).toFixed(1)},${y(r).toFixed(1)}`)).filter(Boolean);
    if (!points.length) return "";
    // The latest reading as a dot, so even a single minute shows.
    const [cx, cy] = points.at(-1).split(",");
    return `<polyline class="${role}" fill="none" stroke-width="2" points="${points.join(" ")}"/>
      <circle class="${role}" cx="${cx}" cy="${cy}" r="3.5" fill="white" stroke-width="2"/>`;
  };
  const percent = (rate) => (rate === null || rate === undefined ? "no data" : `${(100 * rate).toFixed(2)}%`);
  const now = lines.map(([role, variant, series]) => `${role} ${variant}: ${percent(series.at(-1))}`);
  const limit = guardrail.max !== undefined
    ? `<line class="limit" x1="${pad}" x2="${width - pad}" y1="${y(guardrail.max)}" y2="${y(guardrail.max)}"/>` : "";
  const summary = `${name} in ${plan.environment} since the plan started: ${now.join(", ")}${guardrail.max !== undefined ? `, limit ${percent(guardrail.max)}` : ""}`;
  return `<figure class="chart" data-guardrail="${escape(name)}" data-environment="${escape(plan.environment)}">
    <svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${escape(summary)}"><title>${escape(summary)}</title>
      <line x1="${pad}" x2="${width - pad}" y1="${height - pad}" y2="${height - pad}" stroke="#d0d5dd"/>
      ${limit}${lines.map(polyline).join("")}
      <text x="${pad}" y="${pad - 8}" font-size="11" fill="#475467">${escape(percent(top))}</text>
      <text x="${pad}" y="${height - 8}" font-size="11" fill="#475467">${minutes.length ? escape(new Date(minutes[0].at).toLocaleTimeString()) : ""}</text>
    </svg>
    <figcaption class="legend"><strong>${escape(name)}</strong> in ${escape(plan.environment)}:
      ${now.map((text) => `<span>${escape(text)}</span>`).join("")}${guardrail.max !== undefined ? `<span>limit ${percent(guardrail.max)}</span>` : ""}</figcaption>
  </figure>`;
}

async function showTokens() {
  const [tokens, environments] = await Promise.all([api("GET", "/api/v1/tokens"), api("GET", "/api/v1/environments")]);
  $("#new-token select[name=environment]").innerHTML = `<option value="">any (release and admin tokens)</option>`
    + environments.map((e) => `<option>${escape(e.name)}</option>`).join("");
  $("#tokens tbody").innerHTML = tokens.map((t) => `<tr><td>${escape(t.name)}</td><td>${escape(t.scope)}</td>
      <td>${escape(t.environment ?? "—")}</td><td>${time(t.created_at)}</td>
      <td><button class="delete-token danger" data-token="${escape(t.name)}">Delete</button></td></tr>`).join("");
}

/** Keys pasted from a spreadsheet or a list: one per line, or separated by commas, tabs or spaces. */
const pastedKeys = (text) => text.split(/[\s,]+/).filter(Boolean);

async function showSegments() {
  const segments = await api("GET", "/api/v1/segments");
  const count = (list) => (list ?? []).length;
  $("#segments tbody").innerHTML = segments.map((s) => `<tr><td>${escape(s.key)}</td>
      <td title="${escape((s.included ?? []).join(", "))}">${count(s.included)}</td><td>${count(s.excluded)}</td>
      <td>${escape((s.conditions ?? []).map((c) => `${c.attribute} ${c.op.replaceAll("_", " ")} ${(c.values ?? []).join(", ")}`).join("; ") || "—")}</td>
      <td><button class="delete-segment danger" data-segment="${escape(s.key)}">Archive</button></td></tr>`).join("")
    || `<tr><td colspan="5" class="muted">No segments.</td></tr>`;
}

async function showSettings() {
  const [environments, webhooks, edges] = await Promise.all([
    api("GET", "/api/v1/environments"), api("GET", "/api/v1/webhooks"), api("GET", "/api/v1/edges")]);
  $("#environments tbody").innerHTML = environments.map((e) => `<tr><td>${escape(e.name)}</td><td>${escape(e.version)}</td></tr>`).join("");
  for (const select of document.querySelectorAll("select.environments")) {
    select.innerHTML = environments.map((e) => `<option>${escape(e.name)}</option>`).join("");
  }
  $("#webhooks tbody").innerHTML = webhooks.map((w) => `<tr><td>${escape(w.name)}</td><td>${escape(w.environment)}</td>
      <td>${escape(w.url)}</td><td>${escape(w.pending)}</td><td>${escape(w.failed)}</td>
      <td><button class="delete-webhook danger" data-name="${escape(w.name)}">Delete</button></td></tr>`).join("")
    || `<tr><td colspan="6" class="muted">No webhooks.</td></tr>`;
  $("#all-edges tbody").innerHTML = edges.map((e) => `<tr><td>${escape(e.name)}</td><td>${escape(e.environment)}</td>
      <td>${escape(e.url)}</td><td>${escape(e.applied_version ?? "—")}</td><td>${escape(e.lag ?? "never synced")}</td>
      <td><button class="delete-edge danger" data-name="${escape(e.name)}">Delete</button></td></tr>`).join("")
    || `<tr><td colspan="6" class="muted">No edges.</td></tr>`;
}

/** Sends a settings form's fields; shows a refusal under the page, else shows the page again. */
function settingsForm(selector, path, body, page) {
  $(selector).addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const field = (name) => form.elements.namedItem(name).value.trim();
    const error = page === "segments" ? $("#new-segment-error") : $("#settings-error");
    error.textContent = "";
    try {
      await api("POST", path, body(field));
      form.reset();
      await (page === "segments" ? showSegments() : showSettings());
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
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

settingsForm("#new-segment", "/api/v1/segments",
  (field) => ({ key: field("key"), included: pastedKeys(field("included")), excluded: pastedKeys(field("excluded")) }), "segments");
settingsForm("#new-environment", "/api/v1/environments", (field) => ({ name: field("name") }), "settings");
settingsForm("#new-webhook", "/api/v1/webhooks",
  (field) => ({ name: field("name"), url: field("url"), environment: field("environment") }), "settings");
settingsForm("#new-edge", "/api/v1/edges",
  (field) => ({ name: field("name"), url: field("url"), environment: field("environment") }), "settings");

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

$("#new-token").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const field = (name) => form.elements.namedItem(name).value;
  $("#new-token-error").textContent = "";
  try {
    const created = await api("POST", "/api/v1/tokens",
      { name: field("name").trim(), scope: field("scope"), environment: field("environment") || null });
    $("#new-token-value").textContent = created.token;
    $("#new-token-secret").hidden = false;
    form.elements.namedItem("name").value = "";
    await showTokens();
  } catch (error) {
    $("#new-token-error").textContent = error.message;
  }
});

window.addEventListener("hashchange", route);

// ---- Rendering -----------------------------------------------------------------------------

function exposure(flag) {
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

/** A UTC timestamp in the reader's local time, with UTC on hover. */
function time(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return escape(iso);
  return `<time datetime="${escape(iso)}" title="${escape(iso)}">${escape(at.toLocaleString())}</time>`;
}

/** A verdict in the words the CLI and the notifications use. */
const VERDICTS = { pass: "pass", fail: "fail", insufficient: "insufficient data" };

/** `2d`, `1d 12h`, `45m`: as the CLI and the notifications write durations. */
function duration(seconds) {
  const parts = [[Math.floor(seconds / 86400), "d"], [Math.floor(seconds % 86400 / 3600), "h"], [Math.floor(seconds % 3600 / 60), "m"]]
    .filter(([n]) => n > 0).map(([n, unit]) => `${n}${unit}`);
  return parts.length ? parts.join(" ") : `${seconds}s`;
}

function renderPlans(views) {
  $("#plans").innerHTML = views.map((plan) => planView(plan)).join("")
    || `<p class="muted">No active plan in this environment.</p>`;
}

/** A plan's timeline and readings; `why` is shown for a plan that has ended or is held. */
function planView(plan, why = "") {
    const stages = plan.stages.map((stage, index) => {
      const place = index < plan.stage ? "done" : index === plan.stage ? "current" : "";
      const audience = [...(stage.segments ?? []), `${stage.percent}%`].join(" + ");
      return `<div class="stage ${place}"><strong>${escape(stage.name)}</strong><small>${escape(audience)}</small>
        <small>hold ${duration(stage.hold_seconds)}</small></div>`;
    }).join("");
    const readings = (plan.readings ?? []).map((r) => {
      const rate = r.variant.per ? `${(100 * r.variant.metric / r.variant.per).toFixed(2)}%` : "—";
      return `<li>${escape(r.criterion)}: ${rate} (${r.variant.metric} of ${r.variant.per}) <span class="${r.verdict}">${escape(VERDICTS[r.verdict] ?? r.verdict)}</span></li>`;
    }).join("");
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

// ---- Actions -------------------------------------------------------------------------------

/** Runs a change; on success, `edited` (the control it came from) is no longer being edited. */
async function act(work, done, edited) {
  try {
    await work();
    if (edited) delete edited.dataset.edited;
    toast(done);
    await refresh();
  } catch (error) {
    toast(error.message, true);
  }
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

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
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
    const readings = (plan?.readings ?? []).map((r) =>
      `${r.criterion}: ${VERDICTS[r.verdict] ?? r.verdict} (${r.variant.metric} of ${r.variant.per})`).join("; ");
    const why = await confirmWithReason(`Advance ${flag} to ${next} in ${state.environment}?`,
      `Guardrails now: ${readings || "none"}.`, "Advance", reason);
    if (why) await act(() => api("POST", `/api/v1/plans/${change.dataset.plan}/advance`, { rationale: why }), `${flag}: advance recorded`, change);
  } else if (button.classList.contains("rollback")) {
    await act(() => api("POST", `/api/v1/plans/${change.dataset.plan}/rollback`, { rationale: reason }), `${flag} rolled back one stage`, change);
  } else if (button.classList.contains("kill")) {
    const why = await confirmWithReason(`Kill ${flag} in ${state.environment}?`,
      "Everyone gets the flag's off variant at once, at every edge.", "Kill");
    if (why) await act(() => api("POST", flagPath(flag, "kill"), { reason: why }), `${flag} killed in ${state.environment}`);
  } else if (button.classList.contains("delete-segment")) {
    const key = button.dataset.segment;
    const why = await confirmWithReason(`Archive segment ${key}?`,
      "Rules must no longer target it; its key stays taken and its history stays in the audit log.", "Archive");
    if (why) await act(async () => { await api("DELETE", `/api/v1/segments/${encodeURIComponent(key)}?reason=${encodeURIComponent(why)}`); await showSegments(); }, `segment ${key} archived`);
  } else if (button.classList.contains("delete-webhook") || button.classList.contains("delete-edge")) {
    const [kind, path] = button.classList.contains("delete-edge") ? ["edge", "edges"] : ["webhook", "webhooks"];
    const name = button.dataset.name;
    if (confirm(`Delete ${kind} ${name}?`)) {
      await act(async () => { await api("DELETE", `/api/v1/${path}/${encodeURIComponent(name)}`); await showSettings(); }, `${kind} ${name} deleted`);
    }
  } else if (button.classList.contains("delete-token")) {
    const name = button.dataset.token;
    const sure = confirm(`Delete token ${name}? Its next request gets 401, its open streams end, and edges drop it.`);
    if (sure) await act(async () => { await api("DELETE", `/api/v1/tokens/${encodeURIComponent(name)}`); await showTokens(); }, `token ${name} deleted`);
  } else if (button.classList.contains("unkill")) {
    const why = await confirmWithReason(`Unkill ${flag} in ${state.environment}?`,
      "The flag's rules and rollout apply again.", "Unkill");
    if (why) await act(() => api("POST", flagPath(flag, "unkill"), { reason: why }), `${flag} unkilled`);
  }
});

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await logIn($("#token").value.trim());
  } catch (error) {
    $("#login-error").textContent = error.status === 401
      ? "Unknown token."
      : error.status === 403 ? "This token cannot manage flags: use a release or admin token." : error.message;
  }
});
$("#logout").addEventListener("click", logOut);
$("#environment").addEventListener("change", (event) => switchEnvironment(event.target.value));
// Guardrail readings change with metrics, which the stream does not carry.
setInterval(() => state.environment && scheduleRefresh(), 10000);

if (state.token) logIn(state.token).catch(() => sessionStorage.removeItem("rollgate-token"));
