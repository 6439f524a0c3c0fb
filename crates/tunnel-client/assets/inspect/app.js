// The inspector page: a list of captured requests kept live by the /api/events stream, and
// the detail of one. Captured data is only ever put in the page as text (textContent, data
// URLs for images), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
// `arrived`: while the list loads, the entries live events brought meanwhile (see loadList).
const state = { entries: new Map(), order: [], selected: null, detail: null, tunnel: null, query: "", arrived: null };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const init = { ...options, headers: { ...(options.headers || {}) } };
  if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.msg || `HTTP ${res.status}`);
  return data;
}

// ---- formatting -------------------------------------------------------------------------

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}
function fmtDuration(ns, inFlight) {
  if (inFlight) return "…";
  const ms = ns / 1e6;
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
function fmtTime(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function statusClass(code) { return code ? `s${String(code)[0]}` : "sx"; }
function decode(b64) {
  const bin = atob(b64 || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function utf8(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch { return null; }
}
function hexdump(bytes, max = 64 * 1024) {
  const lines = [];
  const n = Math.min(bytes.length, max);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (bytes.length > max) lines.push(`… ${bytes.length - max} more bytes`);
  return lines.join("\n");
}
function prettyXml(text) {
  const tokens = text.replace(/>\s+</g, "><").split(/(<[^>]+>)/).filter((t) => t.trim() !== "");
  let depth = 0;
  return tokens.map((t) => {
    if (/^<\//.test(t)) depth = Math.max(0, depth - 1);
    const line = "  ".repeat(depth) + t;
    if (/^<[^!?/][^>]*[^/]>$/.test(t) || /^<[^!?/]>$/.test(t)) depth++;
    return line;
  }).join("\n").replace(/<([^>]+)>\n\s*([^<\n]+)\n\s*<\/\1>/g, "<$1>$2</$1>");
}
function headerValue(headers, name) {
  const key = Object.keys(headers || {}).find((k) => k.toLowerCase() === name);
  return key ? headers[key][0] : "";
}

// ---- the list ---------------------------------------------------------------------------

function label(e) {
  const method = e.kind === "websocket" ? "WS" : e.request.method;
  const status = e.response ? e.response.status_code : e.error ? "ERR" : "…";
  const size = e.kind === "websocket" ? `${e.messages.kept + e.messages.dropped} msgs` : fmtBytes(e.response ? e.response.body.size : 0);
  return { method, status, size };
}

function row(e) {
  const { method, status, size } = label(e);
  const b = el("button", { type: "button", "data-id": e.id, role: "option", "aria-selected": String(state.selected === e.id) },
    el("span", { class: "method", text: method }),
    el("span", { class: "path", text: e.request.uri }),
    el("span", { class: `status ${statusClass(e.response && e.response.status_code)}`, text: String(status) }),
    el("span", { class: "sub", text: `${fmtTime(e.start)} · ${fmtDuration(e.duration, e.in_flight)} · ${size}${e.replay_of ? " · replay" : ""}` }));
  b.addEventListener("click", () => select(e.id, true));
  return el("li", {}, b);
}

function renderList() {
  const list = $("list");
  list.replaceChildren(...state.order.map((id) => row(state.entries.get(id))));
  $("empty").hidden = state.order.length > 0;
}

function upsert(e) {
  if (state.query) return; // a search result list is not updated live; clear the search to follow
  if (state.arrived) state.arrived.set(e.id, e);
  const known = state.entries.has(e.id);
  state.entries.set(e.id, e);
  if (!known) {
    state.order.unshift(e.id);
    $("list").prepend(row(e));
    $("empty").hidden = true;
  } else {
    const old = $("list").querySelector(`button[data-id="${e.id}"]`);
    if (old) old.parentElement.replaceWith(row(e));
  }
}

// Newer than the version `b` of the same entry: further along (answered, then ended).
function furtherThan(a, b) {
  const progress = (e) => (e.response ? 1 : 0) + (e.in_flight ? 0 : 2);
  return progress(a) >= progress(b);
}

// Loads the list. Live events that arrive while the list is on its way are newer than it may
// be (the list was read before they happened): they are kept aside and put back on top, or a
// request made just as the page connected would vanish when the list lands.
let loads = 0;
async function loadList() {
  const q = state.query ? `&q=${encodeURIComponent(state.query)}` : "";
  const mine = ++loads;
  // A load that supersedes one still on its way keeps what that one had set aside.
  const arrived = state.query ? null : (state.arrived || new Map());
  state.arrived = arrived;
  let data;
  try {
    data = await api(`/api/requests/http?limit=500${q}`);
  } finally {
    if (mine === loads) state.arrived = null;
  }
  if (mine !== loads) return; // a later load (a search, a reconnect) supersedes this one
  const entries = arrived && arrived.cleared ? [] : data.requests;
  state.entries = new Map(entries.map((e) => [e.id, e]));
  state.order = entries.map((e) => e.id);
  for (const e of arrived ? arrived.values() : []) {
    const listed = state.entries.get(e.id);
    if (!listed) state.order.unshift(e.id);
    if (!listed || furtherThan(e, listed)) state.entries.set(e.id, e);
  }
  renderList();
  $("list").dataset.loads = String(mine); // how many loads have landed (the browser test waits on it)
}

async function loadTunnel() {
  const data = await api("/api/tunnels");
  state.tunnel = data.tunnels[0] || null;
  const a = $("public-url");
  a.textContent = state.tunnel ? state.tunnel.public_url : "(tunnel not online)";
  if (state.tunnel) a.href = state.tunnel.public_url;
}

// ---- the detail -------------------------------------------------------------------------

function headerTable(table, headers) {
  const rows = [];
  for (const [name, values] of Object.entries(headers || {})) {
    for (const v of values) rows.push(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: v })));
  }
  table.replaceChildren(...rows);
}

function renderBody(box, part) {
  box.replaceChildren();
  const body = part.body;
  if (!body || body.size === 0) {
    box.append(el("p", { class: "meta", text: body && !body.complete ? "(body still arriving)" : "(no body)" }));
    return;
  }
  const bytes = decode(body.base64);
  const type = (body.content_type || "").toLowerCase();
  const text = utf8(bytes);
  let shown = null;
  if (type.startsWith("image/") && body.truncated_at === null) {
    const url = URL.createObjectURL(new Blob([bytes], { type: type.split(";")[0] }));
    shown = el("img", { src: url, alt: `${type} body, ${fmtBytes(body.size)}` });
  } else if (text !== null && (type.includes("json") || /^\s*[[{]/.test(text))) {
    let pretty = text;
    try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch { /* cut or invalid: as is */ }
    shown = el("pre", { class: "json", text: pretty });
  } else if (text !== null && type.includes("xml")) {
    shown = el("pre", { class: "xml", text: prettyXml(text) });
  } else if (text !== null && type.startsWith("application/x-www-form-urlencoded")) {
    const t = el("table", { class: "headers form" });
    for (const [k, v] of new URLSearchParams(text)) t.append(el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: v })));
    shown = t;
  } else if (text !== null) {
    shown = el("pre", { text });
  } else {
    shown = el("pre", { class: "hex", text: hexdump(bytes) });
  }
  box.append(el("p", { class: "meta", text: `${type || "no content type"} · ${fmtBytes(body.size)}` }), shown);
  if (body.truncated_at !== null) {
    box.append(el("p", { class: "truncated", text: `⚠ truncated at ${body.truncated_at} bytes (${body.size} bytes passed; the rest was not kept)` }));
  } else if (!body.complete) {
    box.append(el("p", { class: "meta", text: "(body still arriving)" }));
  }
}

function messageRow(m) {
  let data = m.text !== undefined ? m.text : hexdump(decode(m.base64), 4096);
  if (m.type === "close" && m.base64 !== undefined) {
    const b = decode(m.base64);
    data = b.length >= 2 ? `code ${(b[0] << 8) | b[1]} ${utf8(b.subarray(2)) || ""}`.trim() : "(no code)";
  }
  const type = m.event ? `${m.type}: ${m.event}` : m.type;
  return el("tr", {},
    el("td", { class: m.direction, text: m.direction === "in" ? "→ in" : "← out" }),
    el("td", { text: fmtTime(m.time) }),
    el("td", { text: type + (m.compressed ? " (compressed)" : "") }),
    el("td", { text: fmtBytes(m.size) + (m.truncated ? " (cut)" : "") }),
    el("td", { class: "data", text: data }));
}

async function loadMessages(e) {
  const section = $("messages-section");
  section.hidden = e.kind === "http";
  if (section.hidden) return;
  const data = await api(`/api/requests/http/${e.id}/messages`);
  $("messages").replaceChildren(...data.messages.map(messageRow));
  state.lastMessage = data.messages.length ? data.messages[data.messages.length - 1].index : -1;
  const dropped = $("messages-dropped");
  dropped.hidden = data.dropped === 0;
  dropped.textContent = `${data.dropped} earlier messages were dropped to stay under the body limit.`;
}

function renderDetail(e) {
  state.detail = e;
  $("detail").hidden = false;
  $("detail-title").textContent = `${e.kind === "websocket" ? "WS" : e.request.method} ${e.request.uri}`;
  const bits = [fmtTime(e.start), fmtDuration(e.duration, e.in_flight)];
  if (e.response) bits.unshift(e.response.status);
  if (e.remote_addr) bits.push(`from ${e.remote_addr}`);
  if (e.replay_of) bits.push(`replay of ${e.replay_of}`);
  if (e.error) bits.push(`error: ${e.error}`);
  $("detail-meta").textContent = bits.join(" · ");
  headerTable($("req-headers"), e.request.headers);
  renderBody($("req-body"), e.request);
  $("res-none").hidden = !!e.response;
  headerTable($("res-headers"), e.response ? e.response.headers : {});
  if (e.response) renderBody($("res-body"), e.response); else $("res-body").replaceChildren();
  $("replay").disabled = $("edit").disabled = e.kind === "websocket";
  // A session's messages are what matters about it: first, above the handshake's headers.
  const detail = $("detail"), messages = $("messages-section"), request = $("req-h").parentElement;
  if (e.kind === "http") detail.append(messages);
  else detail.insertBefore(messages, request);
}

// `open`: the user chose the entry, so on a phone its detail takes the screen. A refresh of the
// selected entry (new messages, its response arriving) must not: it would bring the detail
// back over the list the user has just gone back to.
async function select(id, focusDetail, open = true) {
  if (state.selected !== id) notice("");
  state.selected = id;
  for (const b of $("list").querySelectorAll("button[aria-selected]")) b.setAttribute("aria-selected", String(b.dataset.id === id));
  const e = await api(`/api/requests/http/${id}`);
  if (state.selected !== id) return;
  renderDetail(e);
  if (open) document.querySelector(".panes").classList.add("showing-detail");
  await loadMessages(e);
  if (focusDetail && window.matchMedia("(max-width: 800px)").matches) $("back").focus();
}

let refreshTimer = null;
function refreshDetailSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { if (state.selected) select(state.selected, false, false).catch(() => {}); }, 150);
}

// ---- actions ----------------------------------------------------------------------------

function notice(text, error = false) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("error", error);
}

async function replay(edits) {
  const e = state.detail;
  if (!e) return;
  try {
    const done = await api(`/api/requests/http/${e.id}/replay`, { method: "POST", body: JSON.stringify(edits || {}) });
    notice(`Replayed: the local service answered ${done.status} (new entry ${done.id}).`);
  } catch (err) {
    notice(`Replay failed: ${err.message}`, true);
  }
}

function openEdit() {
  const e = state.detail;
  if (!e || e.kind === "websocket") return;
  $("edit-method").value = e.request.method;
  $("edit-path").value = e.request.uri;
  const lines = [];
  for (const [k, vs] of Object.entries(e.request.headers)) for (const v of vs) lines.push(`${k}: ${v}`);
  $("edit-headers").value = lines.join("\n");
  const bytes = decode(e.request.body.base64);
  const text = utf8(bytes);
  $("edit-body").value = text !== null ? text : "";
  $("edit-body").dataset.original = text !== null ? text : "";
  $("edit-binary").hidden = text !== null;
  $("edit-dialog").showModal();
}

function sendEdit() {
  const headers = $("edit-headers").value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const i = l.indexOf(":");
    return i < 0 ? [l, ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()];
  });
  // Content-Length follows the body when it changes (the API sets it); a stale one is dropped.
  const edits = { method: $("edit-method").value.trim(), path: $("edit-path").value.trim() };
  const body = $("edit-body").value;
  if (body !== $("edit-body").dataset.original) edits.body = body;
  edits.headers = edits.body === undefined ? headers : headers.filter(([k]) => k.toLowerCase() !== "content-length");
  replay(edits);
}

function shellQuote(s) {
  if (/^[\x20-\x7e\n\t]*$/.test(s)) return `'${s.replace(/'/g, `'\\''`)}'`;
  return "$'" + Array.from(new TextEncoder().encode(s), (b) =>
    b >= 0x20 && b < 0x7f && b !== 0x27 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`).join("") + "'";
}

function curlCommand(e) {
  const base = state.tunnel ? state.tunnel.public_url.replace(/\/$/, "") : "http://localhost";
  const skip = new Set(["host", "content-length", "connection", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id", "accept-encoding"]);
  const parts = ["curl", "-X", e.request.method, shellQuote(base + e.request.uri)];
  for (const [k, vs] of Object.entries(e.request.headers)) {
    if (skip.has(k.toLowerCase())) continue;
    for (const v of vs) parts.push("-H", shellQuote(`${k}: ${v}`));
  }
  const bytes = decode(e.request.body.base64);
  if (bytes.length) {
    const text = utf8(bytes);
    if (text !== null) parts.push("--data-binary", shellQuote(text));
    else parts.push("--data-binary", "$'" + Array.from(bytes, (b) => `\\x${b.toString(16).padStart(2, "0")}`).join("") + "'");
  }
  let cmd = parts.join(" ");
  if (e.request.body.truncated_at !== null) cmd += `\n# the body was truncated at ${e.request.body.truncated_at} bytes: this sends only that part`;
  return cmd;
}

async function copyCurl() {
  const e = state.detail;
  if (!e) return;
  const cmd = curlCommand(e);
  $("curl-text").value = cmd;
  let copied = false;
  try { await navigator.clipboard.writeText(cmd); copied = true; } catch { /* no clipboard permission */ }
  $("curl-copied").textContent = copied ? "Copied to the clipboard." : "Select and copy it:";
  $("curl-dialog").showModal();
  $("curl-text").select();
}

// ---- live updates -----------------------------------------------------------------------

function follow() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    $("live").textContent = "live";
    $("live").classList.add("on");
    loadList().catch(() => {});
    loadTunnel().catch(() => {});
  });
  source.addEventListener("error", () => {
    $("live").textContent = "reconnecting…";
    $("live").classList.remove("on");
  });
  source.addEventListener("request", (ev) => {
    const e = JSON.parse(ev.data);
    upsert(e);
    if (e.id === state.selected) refreshDetailSoon();
  });
  source.addEventListener("message", (ev) => {
    const { id, message } = JSON.parse(ev.data);
    if (id !== state.selected || message.index <= (state.lastMessage ?? -1)) return;
    state.lastMessage = message.index;
    $("messages-section").hidden = false;
    $("messages").append(messageRow(message));
  });
  source.addEventListener("cleared", () => {
    if (state.arrived) { state.arrived.clear(); state.arrived.cleared = true; }
    state.entries.clear();
    state.order = [];
    renderList();
  });
  source.addEventListener("lagged", () => loadList().catch(() => {}));
}

function move(step) {
  if (!state.order.length) return;
  const i = state.order.indexOf(state.selected);
  const next = state.order[Math.max(0, Math.min(state.order.length - 1, i < 0 ? 0 : i + step))];
  select(next, false);
  const b = $("list").querySelector(`button[data-id="${next}"]`);
  if (b) b.focus();
}

function keys(ev) {
  if (ev.target.closest("input, textarea, dialog") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
    r: () => replay(), e: openEdit, c: copyCurl, "/": () => $("search").focus(),
  };
  const act = actions[ev.key];
  if (act) { ev.preventDefault(); act(); }
}

function start() {
  $("replay").addEventListener("click", () => replay());
  $("edit").addEventListener("click", openEdit);
  $("curl").addEventListener("click", copyCurl);
  $("back").addEventListener("click", () => {
    document.querySelector(".panes").classList.remove("showing-detail");
    const b = $("list").querySelector(`button[data-id="${state.selected}"]`);
    if (b) b.focus();
  });
  $("clear").addEventListener("click", () => api("/api/requests/http", { method: "DELETE", body: "{}" }).catch((err) => notice(err.message, true)));
  $("edit-dialog").addEventListener("close", () => { if ($("edit-dialog").returnValue === "send") sendEdit(); });
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.query = $("search").value.trim();
    loadList().catch((err) => notice(err.message, true));
  });
  $("search").addEventListener("search", () => { state.query = $("search").value.trim(); loadList().catch(() => {}); });
  document.addEventListener("keydown", keys);
  follow();
}

start();
