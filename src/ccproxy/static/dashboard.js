// CCProxy dashboard: one page, no build step, no network beyond this proxy's own APIs.
"use strict";

const state = { tab: "requests", page: 1, limit: 25, model: "", rules: { request: [], response: [] } };
const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const resp = await fetch(path, { credentials: "same-origin", ...options });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const message = (data.error && data.error.message) || resp.statusText;
    throw new Error(`${resp.status}: ${message}`);
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const time = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const shortId = (id) => (id || "").slice(4, 18); // ms time + 3 random digits; the API finds any prefix

// --- cards (from /v1/metrics) ---------------------------------------------------------------
async function loadCards() {
  try {
    const m = await api("/v1/metrics");
    const cache = m.cache && m.cache.enabled ? `${Math.round(m.cache.hit_rate * 100)} %` : "off";
    const circuits = Object.entries(m.upstreams || {}).map(([n, u]) => `${n}: ${u.circuit.state}`).join(", ");
    const cards = [
      ["requests", fmt(m.requests.total)],
      ["errors", fmt(m.errors.total)],
      ["p50 latency", m.latency.p50 === null ? "–" : `${m.latency.p50} ms`],
      ["p99 latency", m.latency.p99 === null ? "–" : `${m.latency.p99} ms`],
      ["in flight", fmt(m.in_flight)],
      ["cache hit rate", cache],
      ["retries", fmt(m.retries)],
      ["circuits", circuits || "–"],
      ["native", m.native.implementation],
    ];
    $("cards").replaceChildren(...cards.map(([label, value]) => el("div", { class: "card", "data-card": label }, el("b", {}, value), el("span", {}, label))));
    $("live").classList.remove("stale");
  } catch (err) {
    $("live").classList.add("stale");
  }
}

// --- requests ------------------------------------------------------------------------------------
async function loadRequests() {
  const params = new URLSearchParams({ page: state.page, limit: state.limit, model: state.model || "all" });
  const data = await api(`/api/requests?${params}`);
  $("total").textContent = `${fmt(data.total)} requests`;
  $("page-label").textContent = `page ${state.page} of ${Math.max(1, Math.ceil(data.total / state.limit))}`;
  const rows = data.requests.map((r) => {
    const status = r.response.statusCode;
    const u = r.usage || {};
    return el(
      "tr",
      { "data-id": r.requestId, onclick: () => openDetail(r.requestId) },
      el("td", {}, time(r.timestamp)),
      el("td", {}, shortId(r.requestId)),
      el("td", {}, `${r.model} → ${r.routedModel}`),
      el("td", { class: status >= 400 || r.response.streamError ? "bad" : "ok" }, `${status}${r.response.streamError ? " (stream error)" : ""}`),
      el("td", {}, fmt(r.response.responseTime)),
      el("td", {}, fmt(u.input_tokens)),
      el("td", {}, fmt(u.output_tokens)),
      el("td", {}, fmt((u.cache_read_input_tokens || 0) + (u.cache_creation_input_tokens || 0))),
      el("td", {}, r.response.isStreaming ? "yes" : "no"),
    );
  });
  $("request-rows").replaceChildren(...rows);
}

async function openDetail(id) {
  const data = await api(`/api/requests/${encodeURIComponent(id)}`);
  const r = data.request;
  $("detail-title").textContent = `request ${data.fullId}`;
  const fields = [
    ["time", time(r.timestamp)],
    ["endpoint", `${r.method} ${r.endpoint}`],
    ["model", r.model],
    ["routed to", `${r.upstream} / ${r.routedModel}`],
    ["status", r.response.statusCode],
    ["error", r.errorType || r.response.streamError || "–"],
    ["latency", `${fmt(r.response.responseTime)} ms`],
    ["streaming", r.response.isStreaming ? "yes" : "no"],
    ["stop reason", r.stopReason || "–"],
    ["tokens in / out", `${fmt(r.usage.input_tokens)} / ${fmt(r.usage.output_tokens)}`],
    ["cache read / write", `${fmt(r.usage.cache_read_input_tokens)} / ${fmt(r.usage.cache_creation_input_tokens)}`],
    ["messages", fmt(r.messageCount)],
    ["conversation", r.conversationHash || "–"],
    ["user agent", r.userAgent || "–"],
    ["organization", r.organizationId || "–"],
  ];
  $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  $("detail-ratelimit").textContent = r.response.rateLimit ? JSON.stringify(r.response.rateLimit, null, 2) : "none reported";
  $("detail-body").textContent = pretty(r.body) || "not stored (CCPROXY_LOG_BODIES=off)";
  $("detail-response").textContent = pretty(r.response.body) || "not stored";
  $("detail").classList.remove("hidden");
}

function pretty(text) {
  if (!text) return "";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
}

// --- usage charts (plain SVG) ------------------------------------------------------------------
function barChart(target, items, label) {
  const node = $(target);
  if (!items.length) { node.replaceChildren(el("p", { class: "note" }, "no data yet")); return; }
  const w = 800, h = 180, pad = 24;
  const max = Math.max(1, ...items.map((i) => i.value));
  const bw = (w - pad) / items.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  items.forEach((item, i) => {
    const bh = ((h - pad) * item.value) / max;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("class", "bar");
    rect.setAttribute("x", pad + i * bw + 1);
    rect.setAttribute("y", h - pad - bh);
    rect.setAttribute("width", Math.max(1, Math.min(bw - 2, 56)));
    rect.setAttribute("height", bh);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${item.label}: ${fmt(item.value)} ${label}`;
    rect.append(title);
    svg.append(rect);
    if (items.length <= 31 || i % Math.ceil(items.length / 24) === 0) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", pad + i * bw + 2);
      text.setAttribute("y", h - 8);
      text.textContent = item.label;
      svg.append(text);
    }
  });
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", 2);
  top.setAttribute("y", 10);
  top.textContent = fmt(max);
  svg.append(top);
  node.replaceChildren(svg);
}

async function loadUsage() {
  const now = new Date();
  const iso = (d) => d.toISOString();
  const daysAgo = (n) => new Date(now.getTime() - n * 86400000);
  const daily = await api(`/api/stats/dashboard?${new URLSearchParams({ start: iso(daysAgo(14)), end: iso(now) })}`);
  const byDay = Object.fromEntries(daily.dailyStats.map((d) => [d.date, d.tokens]));
  const days = [];
  for (let n = 13; n >= 0; n -= 1) {
    const day = daysAgo(n).toISOString().slice(0, 10);
    days.push({ label: day.slice(5), value: byDay[day] || 0 });
  }
  barChart("chart-daily", days, "tokens");
  const hourly = await api(`/api/stats/hourly?${new URLSearchParams({ start: iso(daysAgo(1)), end: iso(now), bucket: 60 })}`);
  barChart("chart-hourly", hourly.hourlyStats.map((d) => ({ label: d.label, value: d.tokens })), "tokens");
  const models = await api(`/api/stats/models?${new URLSearchParams({ start: iso(daysAgo(7)), end: iso(now) })}`);
  barChart("chart-models", models.modelStats.map((d) => ({ label: d.model, value: d.tokens })), "tokens");
}

// --- conversations ------------------------------------------------------------------------------
async function loadConversations() {
  const data = await api("/api/conversations?limit=50");
  $("conversation-rows").replaceChildren(
    ...data.conversations.map((c) =>
      el("tr", {}, el("td", {}, time(c.lastActivity)), el("td", {}, c.projectName), el("td", { class: "wrap" }, c.firstMessage), el("td", {}, fmt(c.requestCount)), el("td", {}, c.model || "–")),
    ),
  );
  $("conversation-note").textContent = data.total ? `${data.total} conversations` : "no Claude Code conversations found (CLAUDE_PROJECTS_DIR)";
}

// --- settings: header rules -----------------------------------------------------------------------
function ruleRow(kind, rule, index) {
  const update = (field) => (event) => {
    const target = event.target;
    state.rules[kind][index][field] = target.type === "checkbox" ? target.checked : target.value;
  };
  const action = el("select", { onchange: update("action"), "data-field": "action" }, ...["block", "set", "replace"].map((a) => el("option", { value: a }, a)));
  action.value = rule.action;
  const enabled = el("input", { type: "checkbox", onchange: update("enabled"), "data-field": "enabled" });
  enabled.checked = rule.enabled !== false;
  const input = (field) => {
    const node = el("input", { oninput: update(field), "data-field": field });
    node.value = rule[field] || "";
    return node;
  };
  return el(
    "tr",
    {},
    el("td", {}, input("header")),
    el("td", {}, action),
    el("td", {}, input("value")),
    el("td", {}, input("find")),
    el("td", {}, enabled),
    el("td", {}, el("button", { onclick: () => { state.rules[kind].splice(index, 1); renderRules(); } }, "remove")),
  );
}

function renderRules() {
  for (const kind of ["request", "response"]) {
    $(`rules-${kind}`).replaceChildren(...state.rules[kind].map((rule, i) => ruleRow(kind, rule, i)));
  }
}

async function loadSettings() {
  const data = await api("/api/settings");
  state.rules.request = data.requestHeaderRules;
  state.rules.response = data.responseHeaderRules;
  renderRules();
}

async function saveSettings() {
  const body = { requestHeaderRules: state.rules.request, responseHeaderRules: state.rules.response };
  try {
    const data = await api("/api/settings", { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    state.rules.request = data.requestHeaderRules;
    state.rules.response = data.responseHeaderRules;
    renderRules();
    $("settings-status").textContent = "saved";
  } catch (err) {
    $("settings-status").textContent = `not saved: ${err.message}`;
  }
}

// --- wiring ------------------------------------------------------------------------------------------
function show(tab) {
  state.tab = tab;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("hidden", p.id !== `tab-${tab}`));
  refresh();
}

async function refresh() {
  loadCards();
  try {
    if (state.tab === "requests") await loadRequests();
    else if (state.tab === "usage") await loadUsage();
    else if (state.tab === "conversations") await loadConversations();
  } catch (err) {
    $("live").classList.add("stale");
  }
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
document.querySelectorAll(".add-rule").forEach((b) =>
  b.addEventListener("click", () => {
    state.rules[b.dataset.kind].push({ header: "", action: "set", value: "", find: "", enabled: true });
    renderRules();
  }),
);
$("save-settings").addEventListener("click", saveSettings);
$("detail-close").addEventListener("click", () => $("detail").classList.add("hidden"));
let filterTimer = null;
$("model-filter").addEventListener("input", (e) => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => { state.model = e.target.value.trim(); state.page = 1; loadRequests(); }, 250);
});
$("prev").addEventListener("click", () => { if (state.page > 1) { state.page -= 1; loadRequests(); } });
$("next").addEventListener("click", () => { state.page += 1; loadRequests(); });

loadSettings();
refresh();
setInterval(() => { if (state.tab !== "settings" && !document.hidden) refresh(); }, 3000);
