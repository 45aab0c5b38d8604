// Segments, tokens and settings (environments, webhooks, edges).

import { $, api, attempt, confirmWithReason, escape, read, time, toast } from "./lib.js";
import { bindEditor, pastedKeys, redraw, segmentDraft, segmentEditorFields, segmentOut, submitEditor } from "./rules.js";

export async function showTokens() {
  const [tokens, environments] = await Promise.all([api("GET", "/api/v1/tokens"), api("GET", "/api/v1/environments")]);
  $("#new-token select[name=environment]").innerHTML = `<option value="">any (release and admin tokens)</option>`
    + environments.map((e) => `<option>${escape(e.name)}</option>`).join("");
  $("#tokens tbody").innerHTML = tokens.map((t) => `<tr><td>${escape(t.name)}</td><td>${escape(t.scope)}</td>
      <td>${escape(t.environment ?? "—")}</td><td>${time(t.created_at)}</td>
      <td><button class="delete-token danger" data-token="${escape(t.name)}">Delete</button></td></tr>`).join("");
}

export async function showSegments() {
  const segments = await api("GET", "/api/v1/segments");
  const count = (list) => (list ?? []).length;
  $("#segments tbody").innerHTML = segments.map((s) => `<tr><td>${escape(s.key)}</td>
      <td title="${escape((s.included ?? []).join(", "))}">${count(s.included)}</td><td>${count(s.excluded)}</td>
      <td>${escape((s.conditions ?? []).map((c) => `${c.attribute} ${c.op.replaceAll("_", " ")} ${(c.values ?? []).join(", ")}`).join("; ") || "—")}</td>
      <td><button class="edit-segment" data-segment="${escape(s.key)}">Edit</button>
        <button class="delete-segment danger" data-segment="${escape(s.key)}">Archive</button></td></tr>`).join("")
    || `<tr><td colspan="5" class="muted">No segments.</td></tr>`;
}

export async function showSettings() {
  const [environments, webhooks, edges] = await Promise.all([
    api("GET", "/api/v1/environments"), api("GET", "/api/v1/webhooks"), api("GET", "/api/v1/edges")]);
  $("#environments tbody").innerHTML = environments.map((e) => `<tr><td>${escape(e.name)}</td><td>${escape(e.version)}</td>
      <td><form class="allowed-origins inline" data-environment="${escape(e.name)}">
        <label>Origins of ${escape(e.name)}, space-separated
          <input name="origins" value="${escape((e.allowed_origins ?? []).join(" "))}" placeholder="https://shop.example.com" autocomplete="off"></label>
        <button type="submit">Save</button></form></td></tr>`).join("");
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

settingsForm("#new-segment", "/api/v1/segments",
  (field) => ({ key: field("key"), included: pastedKeys(field("included")), excluded: pastedKeys(field("excluded")) }), "segments");

settingsForm("#new-environment", "/api/v1/environments", (field) => ({ name: field("name") }), "settings");

// An environment's allowed origins: the list replaces the one before.
$("#environments").addEventListener("submit", async (event) => {
  if (!event.target.matches("form.allowed-origins")) return;
  event.preventDefault();
  const form = event.target;
  const environment = form.dataset.environment;
  const origins = form.elements.namedItem("origins").value.split(/\s+/).filter(Boolean);
  $("#settings-error").textContent = "";
  try {
    await api("PUT", `/api/v1/environments/${encodeURIComponent(environment)}/allowed-origins`, { allowed_origins: origins });
    toast(`${environment}: ${origins.length ? origins.join(", ") : "no origin"} may call it from browsers`);
    await showSettings();
  } catch (failure) {
    $("#settings-error").textContent = failure.message;
  }
});

settingsForm("#new-webhook", "/api/v1/webhooks",
  (field) => ({ name: field("name"), url: field("url"), environment: field("environment") }), "settings");

settingsForm("#new-edge", "/api/v1/edges",
  (field) => ({ name: field("name"), url: field("url"), environment: field("environment") }), "settings");

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

// Archiving and deleting, each after a confirmation.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("#segments button, #tokens button, #webhooks button, #all-edges button");
  if (!button) return;
  if (button.classList.contains("edit-segment")) {
    await editSegment(button.dataset.segment).catch((error) => toast(error.message, true));
  } else if (button.classList.contains("delete-segment")) {
    const key = button.dataset.segment;
    const why = await confirmWithReason(`Archive segment ${key}?`,
      "Rules must no longer target it; its key stays taken and its history stays in the audit log.", "Archive");
    if (why && await attempt(() => api("DELETE", `/api/v1/segments/${encodeURIComponent(key)}?reason=${encodeURIComponent(why)}`), `segment ${key} archived`)) await showSegments();
  } else if (button.classList.contains("delete-webhook") || button.classList.contains("delete-edge")) {
    const [kind, path] = button.classList.contains("delete-edge") ? ["edge", "edges"] : ["webhook", "webhooks"];
    const name = button.dataset.name;
    if (confirm(`Delete ${kind} ${name}?`) && await attempt(() => api("DELETE", `/api/v1/${path}/${encodeURIComponent(name)}`), `${kind} ${name} deleted`)) await showSettings();
  } else if (button.classList.contains("delete-token")) {
    const name = button.dataset.token;
    const sure = confirm(`Delete token ${name}? Its next request gets 401, its open streams end, and edges drop it.`);
    if (sure && await attempt(() => api("DELETE", `/api/v1/tokens/${encodeURIComponent(name)}`), `token ${name} deleted`)) await showTokens();
  }
});

/** Opens the segment editor on `key`'s current members and conditions, saved with If-Match. */
async function editSegment(key) {
  const path = `/api/v1/segments/${encodeURIComponent(key)}`;
  const { data: segment, etag: revision } = await read(path);
  const old = $("#edit-segment");
  // A fresh form each time, so no listener of an earlier edit stays behind.
  const form = old.cloneNode(false);
  form.innerHTML = `<h2>Segment ${escape(key)}</h2><div class="fields"></div><p class="error" role="alert"></p>
    <button type="submit" class="primary">Save</button> <button type="button" class="cancel">Cancel</button>`;
  old.replaceWith(form);
  form.hidden = false;
  const draft = segmentDraft(segment);
  const fields = form.querySelector(".fields");
  const render = (focus) => redraw(fields, () => segmentEditorFields(draft), focus);
  bindEditor(form, draft, [], render);
  render();
  form.querySelector(".cancel").addEventListener("click", () => (form.hidden = true));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = await submitEditor(form, () => segmentOut(draft), (body) =>
      api("PUT", path, body, revision).catch((failure) => {
        if (failure.status === 412) failure.message = "Someone changed this segment since you opened it: open it again to see their change.";
        throw failure;
      }));
    if (!saved) return;
    toast(`segment ${key} saved`);
    form.hidden = true;
    await showSegments();
  });
  form.querySelector("textarea").focus();
}
