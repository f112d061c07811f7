// The review page: the wiring matrix (canvas), the selected pair's synapse list and review buttons, linked to
// the Neuroglancer viewer (iframe) through the server's websocket. Plain JS, no build step, no network beyond
// this server. `window.review` exposes the page state for tests and scripts.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const MARGIN = 40;                       // room for the type labels left of and above the matrix
const RAMP = [[255, 237, 160], [253, 141, 60], [128, 0, 38]];  // small → large summed area
let TYPE_RGB = {};  // cell type → colour, as Neuroglancer colours the cells (from GET health)

const state = {
  version: -1, cells: [], index: new Map(), entries: new Map(), maxArea: 0, log: false,
  pair: null, synapses: [], current: -1, highlighted: new Set(), decisions: 0, ws: null,
};
window.review = state;

const $ = (id) => document.getElementById(id);
const canvas = $("matrix");
const ctx = canvas.getContext("2d");

function api(path, options = {}) {
  const headers = Object.assign({"Content-Type": "application/json"}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  return fetch("/api/v1/" + path, Object.assign({}, options, {headers})).then((r) => {
    if (!r.ok) return r.json().then((e) => { throw new Error(e.error || r.statusText); });
    return r.json();
  });
}

// ------------------------------------------------------------------ the matrix
function setMatrix(m) {
  state.version = m.version;
  state.cells = m.cells;
  state.index = new Map(m.cells.map((c, k) => [c.id, k]));
  state.entries = new Map();
  for (const e of m.entries) state.entries.set(e[0] + "," + e[1], e);
  state.maxArea = m.max_area_um2;
  draw();
  legend();
}

function colour(area) {
  let t;
  if (state.log) {
    let lo = Infinity;
    for (const e of state.entries.values()) if (e[3] > 0 && e[3] < lo) lo = e[3];
    const span = Math.log(state.maxArea) - Math.log(lo);
    t = span > 0 ? (Math.log(area) - Math.log(lo)) / span : 1;
  } else {
    t = state.maxArea > 0 ? area / state.maxArea : 1;
  }
  t = Math.min(1, Math.max(0, t));
  const [a, b, u] = t < 0.5 ? [RAMP[0], RAMP[1], t * 2] : [RAMP[1], RAMP[2], (t - 0.5) * 2];
  return a.map((v, i) => Math.round(v + (b[i] - v) * u));
}

function cellSize() { return (canvas.width - MARGIN) / Math.max(1, state.cells.length); }

// page coordinates of the centre of matrix entry (row = post index, col = pre index)
function cellCentre(row, col) {
  const r = canvas.getBoundingClientRect(), s = cellSize();
  return [r.left + MARGIN + (col + 0.5) * s, r.top + MARGIN + (row + 0.5) * s];
}

function draw() {
  const n = state.cells.length, s = cellSize(), size = canvas.width - MARGIN;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#1b1b1f";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!n) return;
  // white background, highlighted rows / columns (cells selected in Neuroglancer), then the non-zero entries on top
  // (zero entries are transparent), so an entry keeps its exact colour when highlighted
  ctx.fillStyle = "#fff";
  ctx.fillRect(MARGIN, MARGIN, size, size);
  ctx.fillStyle = "rgba(0, 120, 255, 0.18)";
  for (const id of state.highlighted) {
    const k = state.index.get(id);
    if (k === undefined) continue;
    ctx.fillRect(MARGIN, MARGIN + k * s, size, Math.max(s, 1));
    ctx.fillRect(MARGIN + k * s, MARGIN, Math.max(s, 1), size);
  }
  const img = ctx.createImageData(n, n);
  for (const e of state.entries.values()) {
    const c = colour(e[3]), o = 4 * (e[0] * n + e[1]);
    img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
  }
  const off = document.createElement("canvas");
  off.width = n; off.height = n;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, MARGIN, MARGIN, size, size);
  // type groups: separators and labels
  ctx.strokeStyle = "#555"; ctx.fillStyle = "#ddd"; ctx.font = "11px sans-serif";
  let start = 0;
  for (let k = 1; k <= n; k++) {
    if (k < n && state.cells[k].type === state.cells[start].type) continue;
    const t = state.cells[start].type || "?", mid = (start + k) / 2 * s;
    ctx.fillStyle = TYPE_RGB[t] || "#ddd";
    ctx.fillText(t, 2, MARGIN + mid + 4);
    ctx.save(); ctx.translate(MARGIN + mid - 4, MARGIN - 4); ctx.fillText(t, -8, 0); ctx.restore();
    if (k < n) {
      ctx.beginPath();
      ctx.moveTo(MARGIN, MARGIN + k * s); ctx.lineTo(MARGIN + size, MARGIN + k * s);
      ctx.moveTo(MARGIN + k * s, MARGIN); ctx.lineTo(MARGIN + k * s, MARGIN + size);
      ctx.stroke();
    }
    start = k;
  }
  if (state.pair) {
    const r = state.index.get(state.pair.post), c = state.index.get(state.pair.pre);
    if (r !== undefined && c !== undefined) {
      ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 2;
      ctx.strokeRect(MARGIN + c * s - 1, MARGIN + r * s - 1, s + 2, s + 2);
      ctx.lineWidth = 1;
    }
  }
  $("status").textContent = `${n} cells · ${state.entries.size} connected pairs · version ${state.version}`;
}

function legend() {
  const types = [...new Set(state.cells.map((c) => c.type))];
  $("legend").innerHTML = "rows = post, columns = pre; colour = summed synaptic area " +
    `(max ${state.maxArea.toFixed(4)} µm²) · ` +
    types.map((t) => `<span style="background:${TYPE_RGB[t] || "#ccc"}">${t || "?"}</span>`).join("");
}

function entryAt(ev) {
  const r = canvas.getBoundingClientRect(), s = cellSize();
  const col = Math.floor((ev.clientX - r.left - MARGIN) / s), row = Math.floor((ev.clientY - r.top - MARGIN) / s);
  if (row < 0 || col < 0 || row >= state.cells.length || col >= state.cells.length) return null;
  return {row, col, pre: state.cells[col], post: state.cells[row], e: state.entries.get(row + "," + col)};
}

canvas.addEventListener("mousemove", (ev) => {
  const hit = entryAt(ev), tip = $("tip");
  if (!hit) { tip.hidden = true; return; }
  const n = hit.e ? hit.e[2] : 0, a = hit.e ? hit.e[3] : 0;
  tip.textContent = `pre ${hit.pre.id} (${hit.pre.type}) → post ${hit.post.id} (${hit.post.type}): ${n} synapses, ${a.toFixed(4)} µm²`;
  const box = canvas.getBoundingClientRect();
  tip.style.left = (ev.clientX - box.left + 12) + "px";
  tip.style.top = (ev.clientY - box.top + 12) + "px";
  tip.hidden = false;
});
canvas.addEventListener("mouseleave", () => { $("tip").hidden = true; });
canvas.addEventListener("click", (ev) => {
  const hit = entryAt(ev);
  if (hit) selectPair(hit.pre.id, hit.post.id);
});
$("log").addEventListener("change", (ev) => { state.log = ev.target.checked; draw(); });

// ------------------------------------------------------------------ the selected pair and its synapses
function selectPair(pre, post) {
  state.pair = {pre, post};
  send({action: "select", pre, post});
  draw();
  return loadSynapses();
}

function loadSynapses() {
  const {pre, post} = state.pair;
  return api(`synapses?pre=${pre}&post=${post}`).then((list) => {
    state.synapses = list;
    state.current = list.length ? 0 : -1;
    renderPair();
  });
}

function typeOptions(select, current) {
  const types = [...new Set(["EA", "MSN", "GP", "INT", ...state.cells.map((c) => c.type)])].filter((t) => t);
  select.innerHTML = types.map((t) => `<option${t === current ? " selected" : ""}>${t}</option>`).join("");
}

function renderPair() {
  const {pre, post} = state.pair;
  const cellOf = (id) => state.cells[state.index.get(id)] || {type: ""};
  $("pairtitle").textContent = `pre ${pre} (${cellOf(pre).type}) → post ${post} (${cellOf(post).type}): ${state.synapses.length} synapses`;
  $("celltypes").hidden = false;
  $("preid").textContent = pre; $("postid").textContent = post;
  typeOptions($("pretype"), cellOf(pre).type);
  typeOptions($("posttype"), cellOf(post).type);
  $("steps").hidden = state.synapses.length < 1;
  $("stepinfo").textContent = state.current >= 0 ? `${state.current + 1} / ${state.synapses.length}` : "";
  const body = document.querySelector("#synapses tbody");
  body.innerHTML = "";
  state.synapses.forEach((s, k) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    tr.className = (k === state.current ? "current " : "") + s.status;
    tr.innerHTML = `<td>${s.id}</td><td>${s.pre_cell} → ${s.post_cell}</td><td>${(s.area_um2 || 0).toFixed(4)}</td>` +
      `<td>${s.probability == null ? "" : s.probability.toFixed(2)}</td><td>${s.type || ""}</td><td>${s.status}</td>` +
      `<td class="review"><button data-d="accept">accept</button><button data-d="reject">reject</button>` +
      `<button data-d="flip">flip</button></td>`;
    tr.addEventListener("click", (ev) => {
      const d = ev.target.dataset && ev.target.dataset.d;
      if (d) { reviewSynapse(s.id, d); return; }
      step(k - state.current);
    });
    body.appendChild(tr);
  });
}

function step(delta) {
  if (!state.synapses.length) return;
  state.current = (state.current + delta + state.synapses.length) % state.synapses.length;
  send({action: "goto", synapse: state.synapses[state.current].id});
  renderPair();
}
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));

function reviewSynapse(id, decision) {
  return api(`synapses/${id}/review`, {method: "POST", body: JSON.stringify({decision, reviewer: $("who").value})})
    .catch((err) => { $("status").textContent = "review failed: " + err.message; });
}

function reviewCell(id, type) {
  return api(`cells/${id}/review`, {method: "POST", body: JSON.stringify({type, reviewer: $("who").value})})
    .catch((err) => { $("status").textContent = "review failed: " + err.message; });
}
$("pretype").addEventListener("change", (ev) => reviewCell(state.pair.pre, ev.target.value));
$("posttype").addEventListener("change", (ev) => reviewCell(state.pair.post, ev.target.value));

// ------------------------------------------------------------------ live updates
function onEvent(msg) {
  if (msg.type === "review") {
    for (const e of msg.entries) {
      const key = e[0] + "," + e[1];
      if (e[2] > 0) state.entries.set(key, e); else state.entries.delete(key);
    }
    state.maxArea = Math.max(0, ...[...state.entries.values()].map((e) => e[3]));
    state.version = msg.version;
    const k = state.synapses.findIndex((s) => s.id === msg.synapse.id);
    if (k >= 0) { state.synapses[k] = msg.synapse; renderPair(); }
    draw();
  } else if (msg.type === "matrix") {
    api("matrix").then((m) => { setMatrix(m); if (state.pair) renderPair(); });
  } else if (msg.type === "segments" || msg.type === "hello") {
    state.highlighted = new Set(msg.segments || msg.ids || []);
    if (msg.type === "hello" && msg.version !== state.version) api("matrix").then(setMatrix);
    draw();
  }
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws?token=${encodeURIComponent(token)}`);
  ws.onmessage = (ev) => onEvent(JSON.parse(ev.data));
  ws.onopen = () => { state.connected = true; };
  ws.onclose = () => { state.connected = false; setTimeout(connect, 1000); };
  state.ws = ws;
}

api("health").then((h) => {
  TYPE_RGB = h.type_colours || {};
  if (h.viewer_url) $("ng").src = h.viewer_url; else { $("ng").hidden = true; $("noviewer").hidden = false; }
  return api("matrix");
}).then((m) => { setMatrix(m); connect(); });
