// roam dashboard: polls the agent's admin API every second and renders members, services and
// the migration timeline. No framework, no build step, nothing fetched from elsewhere.
// The admin token is never part of the page: typed once or taken from #token=..., then kept in
// this tab's sessionStorage only. Data is inserted as text, never as HTML.
"use strict";

const KEY = "roam.token";
// `state` is a stateful service's pre-copy; its `handover` window contains the reroute, so it is not stacked.
const STAGES = ["detection", "pr", "replication", "wait", "state", "reroute", "cleanup", "deploy"];
const POLL_MS = 1000;
let timer = null;
let here = null;

function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "width") node.style.width = v;  // CSSOM, allowed by the page's CSP (inline style attributes are not)
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token);
    history.replaceState(null, "", location.pathname + location.search);  // out of the address bar and history
  }
}

function token() { return sessionStorage.getItem(KEY); }

class Unauthorized extends Error {}

async function api(path) {
  const resp = await fetch(path, {headers: {"Authorization": "Bearer " + token()}, cache: "no-store"});
  if (resp.status === 401) throw new Unauthorized("the agent refused this token");
  const body = await resp.json();
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.error || ""}`);
  return body;
}

function showLogin(message) {
  clearTimeout(timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  for (const id of ["members", "services"]) $(id).tBodies[0].replaceChildren();
  $("migrations").replaceChildren();
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
}

function badge(text) { return el("span", {class: "badge " + (text || ""), text: text || "-"}); }
function dash(v) { return v === undefined || v === null || v === "" ? "-" : String(v); }
function list(v) { return Array.isArray(v) && v.length ? v.join(", ") : "-"; }

function meter(used, cap, label) {
  const frac = cap > 0 ? Math.min(1, used / cap) : 0;
  const bar = el("span", {class: "meter", title: `${label} ${used}/${cap}`}, el("span", {width: `${(frac * 100).toFixed(0)}%`}));
  return el("span", {class: "loadcell"}, label, bar, `${used}/${cap}`, "  ");
}

function emptyRow(tbody, cols, text) {
  tbody.replaceChildren(el("tr", {}, el("td", {class: "empty", colspan: String(cols), text})));
}

function renderMembers(members) {
  const tbody = $("members").tBodies[0];
  $("members-count").textContent = `(${members.length})`;
  if (!members.length) return emptyRow(tbody, 7, "no members");
  tbody.replaceChildren(...members.map((m) => {
    const load = m.load || {};
    const loadCell = el("td", {});
    if (load.cpu_capacity !== undefined) {
      loadCell.append(meter(load.cpu_used, load.cpu_capacity, "cpu"),
        meter(load.mem_used_mib, load.mem_capacity_mib, "mem"), meter(load.slots_used, load.slots_capacity, "slots"));
    } else loadCell.textContent = "-";
    const name = el("td", {}, el("strong", {text: m.name}), m.name === here ? el("span", {class: "muted", text: " (this agent)"}) : "");
    const bw = m.bandwidth_mbps ?? load.bandwidth_mbps;
    return el("tr", {"data-name": m.name}, name, el("td", {}, badge(m.status)), el("td", {text: dash(m.tier)}),
      el("td", {text: dash(m.addr)}), loadCell,
      el("td", {class: "num", text: m.rtt_ms === null || m.rtt_ms === undefined ? "-" : `${m.rtt_ms.toFixed(2)} ms`}),
      linkCell(bw, m.link));
  }));
}

// The link estimate (peer/links/estimate.py): its figure, and how old and from what evidence.
function linkCell(bw, link) {
  const cell = el("td", {class: "num", text: bw === null || bw === undefined ? "-" : `${Number(bw).toFixed(1)} Mbit/s`});
  if (link && link.age_s !== null && link.age_s !== undefined) {
    const note = link.source === "unreachable" ? "unreachable" : `${link.source}, ${Math.round(link.age_s)} s ago`;
    cell.append(el("span", {class: "muted", text: ` (${note}${link.suspect ? ", checking" : ""})`}));
    cell.title = `confidence ${link.confidence}; probed ${link.probed_bytes_last_minute} B in the last minute`;
  }
  return cell;
}

function renderServices(services) {
  const tbody = $("services").tBodies[0];
  $("services-count").textContent = `(${services.length})`;
  if (!services.length) return emptyRow(tbody, 9, "no services");
  tbody.replaceChildren(...services.map((r) => {
    // Records gain `homes`, `endpoints`, `steward` and `standbys`; older agents send only home/endpoint.
    const homes = r.homes || (r.home ? [r.home] : []);
    const endpoints = r.endpoints || (r.endpoint ? [r.endpoint] : []);
    const steward = r.steward || r.home;
    return el("tr", {"data-name": r.name}, el("td", {}, el("strong", {text: r.name})), el("td", {text: dash(r.role)}),
      el("td", {}, badge(r.state)), el("td", {text: dash(steward)}), el("td", {text: list(homes)}),
      el("td", {text: dash(r.location)}), el("td", {text: list(r.standbys)}),
      el("td", {class: "num", text: list(endpoints)}), el("td", {class: "num", text: dash(r.state_version)}));
  }));
}

function clock(t) {
  if (!t) return "-";
  return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
}

function renderMigrations(migrations) {
  const box = $("migrations");
  const shown = migrations.slice(0, 50);
  $("migrations-count").textContent = `(${migrations.length})`;
  if (!shown.length) return box.replaceChildren(el("div", {class: "migration muted", text: "no migration yet"}));
  const totals = shown.map((m) => STAGES.reduce((s, k) => s + ((m.durations_ms || {})[k] || 0), 0));
  const max = Math.max(1, ...totals);
  box.replaceChildren(...shown.map((m) => {
    const d = m.durations_ms || {};
    const bar = el("div", {class: "bar", title: STAGES.filter((k) => d[k] !== undefined).map((k) => `${k} ${d[k].toFixed(1)} ms`).join(", ")});
    for (const k of STAGES) {
      if (d[k] === undefined) continue;
      bar.append(el("span", {class: "s-" + k, "data-stage": k, width: `${(100 * d[k] / max).toFixed(2)}%`,
        title: `${k}: ${d[k].toFixed(1)} ms`}));
    }
    return el("div", {class: "migration", "data-id": m.id, "data-service": m.service},
      el("span", {class: "num muted", text: clock(m.started_at)}), el("strong", {text: m.service}),
      badge(m.kind), el("span", {text: `${dash(m.source)} \u2192 ${dash(m.target)}`}), badge(m.outcome), bar,
      el("span", {class: "total", text: m.finished_at ? `${((m.finished_at - m.started_at) * 1000).toFixed(0)} ms` : "running"}));
  }));
}

function renderLegend() {
  $("legend").replaceChildren(...STAGES.map((k) => el("span", {}, el("i", {class: "s-" + k}), k)));
}

async function refresh() {
  try {
    const health = await fetch("/v1/health", {cache: "no-store"}).then((r) => r.json());
    here = health.cluster;
    const [members, services, migrations] = await Promise.all([api("/v1/members"), api("/v1/services"), api("/v1/migrations")]);
    showApp();
    $("cluster").textContent = `cluster ${here}`;
    renderMembers(members);
    renderServices(services);
    renderMigrations(migrations);
    $("error").hidden = true;
    $("live").className = "live ok";
    $("live").title = "updated " + new Date().toLocaleTimeString([], {hour12: false});
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      return showLogin(err.message);
    }
    $("live").className = "live bad";
    $("error").hidden = false;
    $("error").textContent = `cannot refresh: ${err.message}`;
  }
  timer = setTimeout(refresh, POLL_MS);
}

function start() {
  clearTimeout(timer);
  if (!token()) return showLogin("");
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  renderLegend();
  takeTokenFromFragment();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    $("token-input").value = "";
    if (value) { sessionStorage.setItem(KEY, value); start(); }
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
  window.addEventListener("hashchange", () => { takeTokenFromFragment(); start(); });
  start();
});
