// The dashboard: plain JavaScript modules over the HTTP API (docs/api.md), served by the control
// plane. This one holds the session and the pages' router. The token stays in sessionStorage;
// every request sends it as a bearer token. The environment's snapshot stream (read through
// fetch, since EventSource cannot send headers) triggers refreshes.

import { $, api, escape, state, toast } from "./lib.js";
import { refresh, scheduleRefresh } from "./board.js";
import { refreshCharts, showFlag } from "./flag-page.js";
import { showSegments, showSettings, showTokens } from "./admin.js";

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
        if (new TextDecoder().decode(value).includes("data:")) refreshAll();
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    $("#live").classList.add("off");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

/** The board, and the guardrail charts of an open flag page, catch up with what changed. */
function refreshAll() {
  scheduleRefresh();
  if (!$("#flag-page").hidden && state.flag) refreshCharts(state.flag).catch((error) => toast(error.message, true));
}

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

window.addEventListener("hashchange", route);

// ---- Rendering -----------------------------------------------------------------------------

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
setInterval(() => state.environment && refreshAll(), 10000);

if (state.token) logIn(state.token).catch(() => sessionStorage.removeItem("rollgate-token"));
