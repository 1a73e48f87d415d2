// The ivm dashboard: vanilla JS over the HTTP API. The token is kept in
// sessionStorage (this tab only) once pasted.
"use strict";

const KEY = "ivm-token";
const $ = (sel) => document.querySelector(sel);
const audioUrls = new Map();

function token() { return sessionStorage.getItem(KEY) || ""; }

function setStatus(text) { $("#status").textContent = text; }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(response.status + ": " + detail);
  }
  return response;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function targets(m) { return m.deliveries.map((d) => d.to + " (" + d.state + ")").join(", "); }

// Peaks of 16-bit PCM samples in a WAV, drawn as a waveform.
function drawWave(canvas, buffer) {
  const view = new DataView(buffer);
  let offset = 12, dataStart = -1, dataLength = 0;
  while (offset + 8 <= view.byteLength) {
    const id = String.fromCharCode(view.getUint8(offset), view.getUint8(offset + 1),
      view.getUint8(offset + 2), view.getUint8(offset + 3));
    const size = view.getUint32(offset + 4, true);
    if (id === "data") { dataStart = offset + 8; dataLength = Math.min(size, view.byteLength - dataStart); break; }
    offset += 8 + size + (size % 2);
  }
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (dataStart < 0) return;
  const samples = Math.floor(dataLength / 2);
  const per = Math.max(1, Math.floor(samples / w));
  ctx.fillStyle = "#36c";
  for (let x = 0; x < w; x++) {
    let peak = 0;
    for (let i = x * per; i < Math.min(samples, (x + 1) * per); i++) {
      peak = Math.max(peak, Math.abs(view.getInt16(dataStart + 2 * i, true)));
    }
    const bar = Math.max(1, (peak / 32768) * h);
    ctx.fillRect(x, (h - bar) / 2, 1, bar);
  }
}

async function audioUrl(id) {
  if (!audioUrls.has(id)) {
    const response = await api("/api/v1/messages/" + id + "/audio");
    const buffer = await response.arrayBuffer();
    audioUrls.set(id, { url: URL.createObjectURL(new Blob([buffer], { type: "audio/wav" })), buffer });
  }
  return audioUrls.get(id);
}

async function play(id) {
  const player = $("#player");
  player.src = (await audioUrl(id)).url;
  player.dataset.message = String(id);
  await player.play();
}

async function remove(id) {
  if (!window.confirm("Delete message " + id + "?")) return;
  await api("/api/v1/messages/" + id, { method: "DELETE" });
  audioUrls.delete(id);
  await refresh();
}

async function loadMessages() {
  const page = await (await api("/api/v1/messages?limit=100")).json();
  const body = $("#messages tbody");
  body.replaceChildren();
  for (const m of page.items) {
    const row = document.createElement("tr");
    row.dataset.id = String(m.id);
    cell(row, m.id);
    cell(row, m.from);
    cell(row, targets(m));
    cell(row, m.state);
    cell(row, m.duration_ms === null ? "" : (m.duration_ms / 1000).toFixed(1));
    const wave = cell(row, "");
    const buttons = cell(row, "");
    const actions = cell(row, "");
    if (m.has_audio) {
      const canvas = document.createElement("canvas");
      canvas.className = "wave";
      canvas.width = 160; canvas.height = 32;
      wave.appendChild(canvas);
      audioUrl(m.id).then((a) => drawWave(canvas, a.buffer)).catch((e) => setStatus(e.message));
      const button = document.createElement("button");
      button.className = "play";
      button.textContent = "Play";
      button.addEventListener("click", () => play(m.id).catch((e) => setStatus(e.message)));
      buttons.appendChild(button);
    }
    if (m.state !== "recording") {
      const del = document.createElement("button");
      del.className = "delete";
      del.textContent = "Delete";
      del.addEventListener("click", () => remove(m.id).catch((e) => setStatus(e.message)));
      actions.appendChild(del);
    }
    body.appendChild(row);
  }
}

async function loadSessions() {
  const live = await (await api("/api/v1/sessions")).json();
  const body = $("#sessions tbody");
  body.replaceChildren();
  for (const m of live) {
    const row = document.createElement("tr");
    cell(row, m.id); cell(row, m.from); cell(row, targets(m)); cell(row, m.state);
    body.appendChild(row);
  }
}

async function loadPresence() {
  const presence = await (await api("/api/v1/presence")).json();
  const body = $("#presence tbody");
  body.replaceChildren();
  const rows = presence.devices.map((d) => [d.endpoint, d.state])
    .concat(presence.stored.map((p) => [p.extension, p.device_state + " / " + p.user_status]));
  for (const [endpoint, state] of rows) {
    const row = document.createElement("tr");
    cell(row, endpoint); cell(row, state);
    body.appendChild(row);
  }
}

async function refresh() {
  if (!token()) { setStatus("paste a token to start"); return; }
  try {
    await Promise.all([loadSessions(), loadMessages(), loadPresence()]);
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus(e.message);
  }
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#token").value.trim());
  $("#token").value = "";
  refresh();
});
$("#forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); setStatus("token forgotten"); });

refresh();
// Live sessions and presence every 2 s; the message list every 10 s, and
// not while a message plays.
let ticks = 0;
setInterval(() => {
  if (!token()) return;
  ticks += 1;
  const jobs = [loadSessions(), loadPresence()];
  if (ticks % 5 === 0 && $("#player").paused) jobs.push(loadMessages());
  Promise.all(jobs).catch((e) => setStatus(e.message));
}, 2000);
