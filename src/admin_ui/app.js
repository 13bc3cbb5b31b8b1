"use strict";
// Watchtower's dashboard: talks only to this admin API, same origin, JSON bodies.
const $ = (s) => document.querySelector(s);

// The admin token comes in the link's #token= fragment (never sent to a server); the tab keeps
// it and the address bar loses it.
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  sessionStorage.setItem("watchtower-token", fromLink);
  history.replaceState(null, "", location.pathname);
}
const token = sessionStorage.getItem("watchtower-token") || "";
if (!token) {
  const note = document.createElement("p");
  note.className = "error";
  note.setAttribute("role", "alert");
  note.textContent = "This page needs the admin token: open the dashboard link Watchtower printed when it started (…/#token=…).";
  document.querySelector("main").prepend(note);
}

async function api(method, path, body) {
  // Not in Authorization: beyond loopback the browser sends the [access] password there.
  const opts = { method, headers: { "X-Watchtower-Token": token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = new Error((data && data.error) || resp.statusText);
    err.field = data && data.field;
    throw err;
  }
  return data;
}

// --- the switch
async function loadRouting() {
  const { enabled } = await api("GET", "/api/routing");
  $("#routing").checked = enabled;
  $("#routing-state").textContent = enabled ? "on" : "off";
}
$("#routing").addEventListener("change", async (e) => {
  try {
    const { enabled } = await api("PUT", "/api/routing", { enabled: e.target.checked });
    $("#routing-state").textContent = enabled ? "on" : "off";
  } catch (err) {
    $("#routing-state").textContent = "error: " + err.message;
    loadRouting();
  }
});

// --- routes
let editing = null;
function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label; b.addEventListener("click", onClick); return b;
}
async function loadRoutes() {
  const routes = await api("GET", "/api/routes");
  const body = $("#routes tbody");
  body.replaceChildren();
  for (const r of routes) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    tr.append(cell(r.id), cell(r.domain), cell(r.target_host + ":" + r.target_port));
    const en = document.createElement("td");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = r.enabled; box.setAttribute("aria-label", "enabled " + r.id);
    box.addEventListener("change", async () => {
      try { await api("PUT", "/api/routes/" + encodeURIComponent(r.id), { ...r, enabled: box.checked }); }
      catch (err) { alert(err.message); }
      loadRoutes();
    });
    en.append(box);
    const actions = document.createElement("td");
    actions.append(
      button("Edit", () => startEdit(r)),
      button("Delete", async () => {
        if (!confirm("Delete route " + r.id + "?")) return;
        await api("DELETE", "/api/routes/" + encodeURIComponent(r.id));
        loadRoutes();
      }),
    );
    tr.append(en, actions);
    body.append(tr);
  }
}
function startEdit(r) {
  editing = r.id;
  const f = $("#route-form");
  f.id.value = r.id; f.id.disabled = true;
  f.domain.value = r.domain; f.target_host.value = r.target_host;
  f.target_port.value = r.target_port; f.enabled.checked = r.enabled;
  $("#form-title").textContent = "Edit route " + r.id;
  $("#save").textContent = "Save"; $("#cancel").hidden = false;
  f.domain.focus();
}
function resetForm() {
  editing = null;
  const f = $("#route-form");
  f.reset(); f.id.disabled = false;
  $("#form-title").textContent = "Add a route";
  $("#save").textContent = "Add"; $("#cancel").hidden = true;
  $("#form-error").textContent = "";
  for (const input of f.querySelectorAll("input")) input.removeAttribute("aria-invalid");
}
$("#cancel").addEventListener("click", resetForm);
$("#route-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const route = {
    id: f.id.value.trim(), domain: f.domain.value.trim(), target_host: f.target_host.value.trim(),
    target_port: Number(f.target_port.value), enabled: f.enabled.checked,
  };
  for (const input of f.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  try {
    if (editing) await api("PUT", "/api/routes/" + encodeURIComponent(editing), route);
    else await api("POST", "/api/routes", route);
    resetForm();
    loadRoutes();
  } catch (err) {
    $("#form-error").textContent = err.message;
    if (err.field && f[err.field]) { f[err.field].setAttribute("aria-invalid", "true"); f[err.field].focus(); }
  }
});

// --- exchanges
const rows = [];
function matches(x, filter) {
  if (!filter) return true;
  const hay = [x.method, x.host, x.path, x.status, x.route, x.upstream, x.error].join(" ").toLowerCase();
  return hay.includes(filter);
}
function render() {
  const filter = $("#filter").value.trim().toLowerCase();
  const body = $("#exchanges tbody");
  body.replaceChildren();
  for (const x of rows.slice().reverse()) {
    if (!matches(x, filter)) continue;
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.className = x.status >= 500 ? "s5" : x.status >= 400 ? "s4" : "";
    tr.append(cell(x.ts.slice(11, 23)), cell(x.method), cell(x.host), cell(x.path ?? ""),
      cell(x.status ?? "-"), cell(x.route ?? (x.kind === "tunnel" ? "tunnel" : "pass")), cell(x.duration_ms));
    const show = () => { const d = $("#details"); d.textContent = JSON.stringify(x, null, 2); d.hidden = false; d.focus(); };
    tr.addEventListener("click", show);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") show(); });
    body.append(tr);
  }
}
function add(x) { rows.push(x); if (rows.length > 1000) rows.shift(); }
$("#filter").addEventListener("input", render);
async function loadExchanges() {
  const { exchanges, last } = await api("GET", "/api/exchanges?limit=1000");
  exchanges.forEach(add);
  render();
  const source = new EventSource("/api/exchanges/stream?since=" + last + "&token=" + encodeURIComponent(token));
  source.addEventListener("exchange", (e) => { add(JSON.parse(e.data)); render(); });
}

// --- phone panel
async function loadPhone() {
  const { proxy, ca_url } = await api("GET", "/api/phone");
  $("#proxy-address").textContent = proxy;
  $("#ca-url").textContent = ca_url;
}

loadRouting(); loadRoutes(); loadExchanges(); loadPhone();
