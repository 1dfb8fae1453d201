// The Sensorium dashboard: camera and microphone from the page, over protocol v1 on /ws.
import { Demo } from "/static/demo.js";
import { decode, encode } from "/static/msgpack.js";
import { HISTORY_MINUTES, Timeline, clock, rowName } from "/static/timeline.js";
import { Watch } from "/static/watch.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
const STAGES = ["decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms"];
const COLORS = ["#f6c453", "#9b8cff", "#4fd1c5", "#4f9dff", "#f78fb3", "#8a90a0"];
const HISTORY_S = 60;
const FRAMES_IN_FLIGHT = 2;
const CAMERA_STREAM = "camera";
const MIC_STREAM = "mic";
const RATE_WINDOW_MS = 2000; // results/s is counted over this much of the recent past
const EVENTS_PAGE = 500; // events asked of the log per request
const EVENTS_PAGES = 10; // and at most this many requests per load
const LATEST_EVENTS = 8; // lines in the list under the timeline
const EVENTS_REDRAW_MS = 150; // new events wait this long to be drawn together

// Everything the page knows, in one place (tests read it through window.sensorium).
const state = {
  ws: null,
  connected: false,
  welcome: null,
  // status: "off", "starting" (waiting for the device; the button is disabled) or "on"
  camera: { status: "off", stream: null, seq: 0, inFlight: new Map(), sent: 0, results: 0, dropped: 0, timer: null },
  mic: { status: "off", context: null, node: null, stream: null, seq: 0, sent: 0, results: 0, dropped: 0, chunkSent: new Map() },
  refused: null, // {code, reason} once the server refused this page (bad token, origin): no more reconnecting
  latency: { image: [], audio: [] },
  audioHistory: [],
  labels: {},
  lastResult: { image: null, audio: null },
  colorOf: new Map(),
  clientId: null, // the server's id of this page's connection (welcome.client)
  clockOffset: 0, // server clock minus this browser's, in seconds (from ping/pong)
  pingSentAt: null,
  eventLog: "not loaded", // "loaded", "off" (the server keeps no log) or the reason it failed
};
window.sensorium = state;

// Event times are the server's wall clock: the timeline runs on it.
const serverNow = () => Date.now() / 1000 + state.clockOffset;
const timeline = new Timeline($("timeline"), { now: serverNow, escapeHtml });
const watch = new Watch($("stream-cards"), { escapeHtml, timeline });
state.timeline = timeline;
state.watch = watch;

// --- connection -------------------------------------------------------------------------------

let backoff = 250;

// Close codes that reconnecting cannot cure: say why and stop.
const REFUSALS = {
  4401: () => token
    ? `the server refused this token: open ${location.pathname}?token=… with the right one`
    : `the server wants a token: open ${location.pathname}?token=…`,
  4403: (reason) => `this page's origin is not allowed${reason ? ` (${reason})` : ""}:`
    + ` start the server with --allow-origin ${location.origin}`,
};

function connect() {
  const protocols = ["sensorium.v1"];
  if (token) protocols.push(`sensorium.token.${token}`);
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, protocols);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setConnection("connecting…", "");
  ws.onopen = () => { backoff = 250; };
  ws.onmessage = (event) => onMessage(decode(new Uint8Array(event.data)));
  ws.onclose = (event) => {
    state.connected = false;
    state.camera.inFlight.clear();
    watch.disconnected();
    const refusal = REFUSALS[event.code];
    if (refusal) {
      state.refused = { code: event.code, reason: event.reason };
      setConnection(`${refusal(event.reason)} (${event.code})`, "closed refused");
      return;
    }
    setConnection(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); reconnecting`, "closed");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

function setConnection(text, cls) {
  const el = $("connection");
  el.textContent = text;
  el.className = `state ${cls}`;
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(encode(message)); return true; }
  return false;
}

function onMessage(msg) {
  switch (msg.type) {
    case "welcome":
      state.connected = true;
      state.welcome = msg;
      setConnection("connected", "open");
      $("server").textContent = `${msg.server} · ${Object.entries(msg.modalities).map(([m, v]) => `${m}: ${v.model}`).join(" · ")}`;
      state.clientId = msg.client ?? null;
      watch.connected(state.clientId);
      // every (re)connect: watch all streams again, set the clock, and catch up on what was missed
      send({ type: "watch", streams: "*", ...(token ? { token } : {}) });
      state.pingSentAt = Date.now() / 1000;
      send({ type: "ping", ts: state.pingSentAt });
      loadLabels();
      loadEvents();
      break;
    case "pong":
      if (msg.ts === state.pingSentAt && typeof msg.server_ts === "number") {
        state.clockOffset = msg.server_ts - (msg.ts + Date.now() / 1000) / 2;
      }
      break;
    case "result":
      if (!msg.watched) onResult(msg); // a watched copy is another connection's: only its card shows it
      watch.onResult(msg);
      break;
    case "streams": watch.onStreams(msg); renderEvents(); break;
    case "thumbnail": watch.onThumbnail(msg); break;
    case "event": addEvents([{ ...msg, client: msg.client ?? state.clientId }]); break;
    case "labels":
      notice(`${msg.modality} labels reloaded: version ${msg.version}, ${msg.count} labels`, false);
      loadLabels();
      break;
    case "labels_error": notice(`${msg.modality} labels not reloaded: ${msg.message}`, true); break;
    case "error":
      // Only an error about one of our camera frames frees its slot: an audio chunk or another
      // stream can carry the same seq.
      if (msg.seq !== undefined && msg.modality === "image" && msg.stream === CAMERA_STREAM) {
        state.camera.inFlight.delete(msg.seq);
      } else if (msg.seq !== undefined && msg.modality === "audio" && msg.stream === MIC_STREAM) {
        state.mic.chunkSent.delete(msg.seq);
      }
      if (msg.code === "unknown_type" && !watch.known) {
        // a server from before watching: the page still streams, it just cannot list the others
        watchMessage("This server cannot list its streams (it does not know watch): only this page's results show.");
        break;
      }
      notice(`server error ${msg.code}: ${msg.message}`, true);
      break;
  }
}

// --- results ------------------------------------------------------------------------------------

function onResult(msg) {
  const now = performance.now();
  const modality = msg.modality;
  let roundTrip = null;
  if (modality === "image") {
    const cam = state.camera;
    const sentAt = cam.inFlight.get(msg.seq);
    cam.inFlight.delete(msg.seq);
    // frames the server skipped are the oldest still in flight
    for (const seq of [...cam.inFlight.keys()].slice(0, msg.dropped)) cam.inFlight.delete(seq);
    if (sentAt !== undefined) roundTrip = now - sentAt;
    cam.results += 1;
    cam.dropped += msg.dropped;
    resultTimes.push(now);
  } else {
    const sentAt = state.mic.chunkSent.get(msg.seq);
    if (sentAt !== undefined) roundTrip = now - sentAt;
    state.mic.results += 1;
    state.mic.dropped += msg.dropped;
    state.audioHistory.push({ t: Date.now(), label: msg.silent ? "silent" : msg.top.length ? msg.top[0].label : "" });
  }
  state.lastResult[modality] = msg;
  const timings = msg.timings || {};
  const network = roundTrip === null ? 0 : Math.max(0, roundTrip - (timings.total_ms || 0));
  const series = state.latency[modality];
  series.push({ stages: STAGES.map((s) => timings[s] || 0), network, total: roundTrip ?? timings.total_ms ?? 0 });
  if (series.length > 120) series.shift();
  render(modality);
}

function render(modality) {
  const msg = state.lastResult[modality];
  const bars = $(modality === "image" ? "image-top" : "audio-top");
  if (msg.silent) bars.innerHTML = `<p class="silent">silent</p>`;
  else drawBars(bars, msg.top);
  if (modality === "image") {
    $("overlay").innerHTML = msg.top.slice(0, 3).map((t) => `${escapeHtml(t.label)} ${(t.score * 100).toFixed(0)}%`).join("<br>");
    renderCameraStats();
  } else {
    $("mic-stats").textContent = `window ${msg.window_s?.toFixed(1) ?? "-"} s · dropped ${state.mic.dropped}`;
    drawHistory();
  }
  drawLatency($(`${modality}-latency`), state.latency[modality]);
  const totals = state.latency[modality].map((p) => p.total).sort((a, b) => a - b);
  $(`${modality}-percentiles`).textContent = totals.length
    ? `p50 ${percentile(totals, 50).toFixed(0)} ms · p95 ${percentile(totals, 95).toFixed(0)} ms` : "";
}

// When each recent image result arrived; the rate is refreshed on a timer too, so it falls to 0
// when results stop coming (camera stopped, server silent) instead of freezing at its last value.
const resultTimes = [];
function resultRate() {
  const now = performance.now();
  while (resultTimes.length && resultTimes[0] <= now - RATE_WINDOW_MS) resultTimes.shift();
  return resultTimes.length / (RATE_WINDOW_MS / 1000);
}

function renderCameraStats() {
  if (!state.camera.results) return; // nothing to say before the first result
  $("camera-stats").textContent = `${resultRate().toFixed(1)} results/s · dropped ${state.camera.dropped}`;
}

function drawBars(el, top) {
  el.innerHTML = top.map((t) => `
    <div class="bar"><span class="name">${escapeHtml(t.label)}</span>
      <span class="track"><span class="fill" style="width:${(t.score * 100).toFixed(1)}%"></span></span>
      <span class="num">${t.score.toFixed(3)} · cos ${t.similarity.toFixed(3)}</span></div>`).join("");
}

function drawLatency(canvas, series) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  if (!series.length) return;
  const max = Math.max(...series.map((p) => p.stages.reduce((a, b) => a + b, 0) + p.network), 1);
  const barWidth = width / 120;
  series.forEach((point, i) => {
    let y = height;
    [...point.stages, point.network].forEach((value, s) => {
      const h = (value / max) * (height - 14);
      g.fillStyle = COLORS[s];
      g.fillRect(i * barWidth, y - h, Math.max(1, barWidth - 1), h);
      y -= h;
    });
  });
  g.fillStyle = "#8a90a0";
  g.fillText(`${max.toFixed(0)} ms`, 4, 10);
}

function drawHistory() {
  const canvas = $("audio-history");
  const g = canvas.getContext("2d");
  const now = Date.now();
  state.audioHistory = state.audioHistory.filter((h) => h.t > now - HISTORY_S * 1000);
  g.clearRect(0, 0, canvas.width, canvas.height);
  const palette = ["#4f9dff", "#f6c453", "#4fd1c5", "#f78fb3", "#9b8cff", "#ff9f43", "#7bed9f", "#eccc68"];
  for (let i = 0; i < state.audioHistory.length; i++) {
    const h = state.audioHistory[i];
    if (!state.colorOf.has(h.label)) state.colorOf.set(h.label, palette[state.colorOf.size % palette.length]);
    const x0 = canvas.width * (1 - (now - h.t) / (HISTORY_S * 1000));
    const next = state.audioHistory[i + 1];
    const x1 = next ? canvas.width * (1 - (now - next.t) / (HISTORY_S * 1000)) : canvas.width;
    g.fillStyle = state.colorOf.get(h.label);
    g.fillRect(x0, 0, Math.max(2, x1 - x0), canvas.height);
  }
  const recent = [...new Set(state.audioHistory.map((h) => h.label))].slice(-8);
  $("audio-legend").innerHTML = recent.map((l) => `<span><i style="background:${state.colorOf.get(l)}"></i>${escapeHtml(l)}</span>`).join("");
}

// --- camera -------------------------------------------------------------------------------------

async function toggleCamera() {
  const cam = state.camera;
  if (cam.status === "starting") return; // a second click while the device opens: one capture only
  if (cam.status === "on") { stopCamera(); return; }
  cam.status = "starting";
  const button = $("camera-toggle");
  button.disabled = true;
  try {
    const deviceId = $("camera-device").value;
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: deviceId ? { deviceId: { exact: deviceId } } : { width: 640, height: 480 } });
  } catch (error) {
    cam.status = "off";
    showMediaError("camera-message", "camera", error);
    return;
  } finally {
    button.disabled = false;
  }
  cam.status = "on";
  $("camera-message").hidden = true;
  $("video").srcObject = cam.stream;
  button.textContent = "Stop camera";
  listDevices();
  clearInterval(cam.timer);
  cam.timer = setInterval(sendFrame, 30);
}

function stopCamera() {
  const cam = state.camera;
  clearInterval(cam.timer);
  cam.timer = null;
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  cam.stream = null;
  cam.status = "off";
  send({ type: "end", modality: "image", stream: CAMERA_STREAM }); // watchers see the stream go
  $("camera-toggle").textContent = "Start camera";
}

const canvas = document.createElement("canvas");
let encoding = false;

function sendFrame() {
  const cam = state.camera;
  const video = $("video");
  // Paced like the webcam client: at most FRAMES_IN_FLIGHT frames awaiting a result.
  if (encoding || !state.connected || cam.inFlight.size >= FRAMES_IN_FLIGHT || !video.videoWidth) return;
  const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  encoding = true;
  canvas.toBlob(async (blob) => {
    encoding = false;
    if (!blob) return;
    const data = new Uint8Array(await blob.arrayBuffer());
    const seq = cam.seq++;
    if (send({ type: "frame", stream: CAMERA_STREAM, seq, ts: Date.now() / 1000, format: "jpeg", data })) {
      cam.inFlight.set(seq, performance.now());
      cam.sent += 1;
      watch.ownFrame(CAMERA_STREAM, blob);
    }
  }, "image/jpeg", 0.8);
}

// --- microphone -----------------------------------------------------------------------------------

async function toggleMic() {
  const mic = state.mic;
  if (mic.status === "starting") return; // a second click while the device opens: one capture only
  if (mic.status === "on") { stopMic(); return; }
  mic.status = "starting";
  const button = $("mic-toggle");
  button.disabled = true;
  try {
    const deviceId = $("mic-device").value;
    mic.stream = await navigator.mediaDevices.getUserMedia({ audio: deviceId ? { deviceId: { exact: deviceId } } : true });
  } catch (error) {
    mic.status = "off";
    button.disabled = false;
    showMediaError("mic-message", "microphone", error);
    return;
  }
  try {
    mic.context = new AudioContext();
    await mic.context.audioWorklet.addModule("/static/worklet.js");
    const rate = mic.context.sampleRate;
    mic.node = new AudioWorkletNode(mic.context, "pcm-chunker", { processorOptions: { chunkFrames: Math.round(rate * 0.2) } });
    mic.node.port.onmessage = (event) => {
      const seq = mic.seq++;
      const data = new Uint8Array(event.data);
      if (send({ type: "audio", stream: MIC_STREAM, seq, ts: Date.now() / 1000, sample_rate: rate, channels: 1, dtype: "int16", data })) {
        mic.sent += 1;
        mic.chunkSent.set(seq, performance.now());
        if (mic.chunkSent.size > 100) mic.chunkSent.delete(mic.chunkSent.keys().next().value);
      }
    };
    mic.context.createMediaStreamSource(mic.stream).connect(mic.node);
  } catch (error) {
    stopMic();
    button.disabled = false;
    showMediaError("mic-message", "microphone", error);
    return;
  }
  mic.status = "on";
  button.disabled = false;
  $("mic-message").hidden = true;
  button.textContent = "Stop microphone";
  listDevices();
}

function stopMic() {
  const mic = state.mic;
  if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
  if (mic.context) mic.context.close();
  Object.assign(mic, { status: "off", context: null, node: null, stream: null });
  send({ type: "end", modality: "audio", stream: MIC_STREAM });
  $("mic-toggle").textContent = "Start microphone";
}

function showMediaError(id, what, error) {
  const el = $(id);
  const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
  el.textContent = denied
    ? `The ${what} was denied. Allow it in the browser's site settings, then press start again.`
    : `No ${what} could be opened: ${error && error.message ? error.message : error}`;
  el.className = "message error";
  el.hidden = false;
}

async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  let devices;
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return; // the lists stay as they are; start still opens the default device
  }
  for (const [kind, id] of [["videoinput", "camera-device"], ["audioinput", "mic-device"]]) {
    const select = $(id);
    const current = select.value;
    select.innerHTML = devices.filter((d) => d.kind === kind)
      .map((d, i) => `<option value="${d.deviceId}">${escapeHtml(d.label || `${kind} ${i + 1}`)}</option>`).join("");
    if (current) select.value = current;
  }
}

// --- labels ---------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  let reply;
  try {
    reply = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new Error(`no answer from the server (${error.message})`);
  }
  let body = null;
  try {
    body = await reply.json();
  } catch {
    // not JSON (a proxy's error page, say): said below by status
  }
  if (!reply.ok) {
    const detail = body?.error?.message;
    const error = new Error(`${reply.status}${detail ? ": " + detail : reply.statusText ? " " + reply.statusText : ""}`);
    error.status = reply.status;
    throw error;
  }
  if (body === null) throw new Error(`${reply.status}: the answer is not JSON`);
  return body;
}

// Called without await (on welcome and on reload notices): every failure ends here, in the panel.
async function loadLabels() {
  let sets;
  try {
    sets = await api("/v1/labels");
  } catch (error) {
    notice(`labels not loaded: ${error.message}`, true);
    for (const box of document.querySelectorAll(".label-set .version")) box.textContent = "not loaded";
    return;
  }
  state.labels = sets;
  for (const box of document.querySelectorAll(".label-set")) {
    const set = sets[box.dataset.modality];
    box.hidden = !set;
    if (!set) continue;
    box.querySelector(".version").textContent = `version ${set.version} · ${set.count} labels`;
    const text = box.querySelector("textarea");
    if (document.activeElement !== text) text.value = set.text;
    text.readOnly = !set.editable;
    box.querySelector(".save").hidden = !set.editable;
  }
  const editable = Object.values(sets).some((s) => s.editable);
  $("edit-note").textContent = editable
    ? "Saving writes the label file; the server reloads it in a second or two."
    : "Read-only: start the server with --allow-label-edits to edit labels here.";
  drawScaling();
}

async function saveLabels(box) {
  const modality = box.dataset.modality;
  try {
    await api(`/v1/labels/${modality}`, { method: "PUT", body: box.querySelector("textarea").value, headers: { "Content-Type": "text/plain; charset=utf-8" } });
    notice(`${modality} labels saved; reloading…`, false);
  } catch (error) {
    notice(`${modality} labels not saved: ${error.message}`, true);
  }
}

function drawScaling() {
  const canvas = $("encode-scaling");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = Object.entries(state.labels).flatMap(([m, set]) => (set.history || []).map((h) => ({ ...h, m })));
  if (!points.length) return;
  const maxCount = Math.max(...points.map((p) => p.count), 1);
  const maxMs = Math.max(...points.map((p) => p.encode_ms), 1);
  for (const p of points) {
    g.fillStyle = p.m === "image" ? "#4f9dff" : "#f6c453";
    const x = 20 + (p.count / maxCount) * (canvas.width - 30);
    const y = canvas.height - 15 - (p.encode_ms / maxMs) * (canvas.height - 30);
    g.beginPath(); g.arc(x, y, 3, 0, Math.PI * 2); g.fill();
  }
  g.fillStyle = "#8a90a0";
  g.fillText(`${maxMs.toFixed(0)} ms`, 2, 10);
  g.fillText(`${maxCount} labels`, canvas.width - 70, canvas.height - 3);
}

function notice(text, isError) {
  const el = $("label-notice");
  el.textContent = text;
  el.className = isError ? "message error" : "message";
  el.hidden = false;
}

// --- events -----------------------------------------------------------------------------------------

// The last minutes from the server's event log, then live `event` messages keep it current. Called
// without await on every welcome: live events that arrive meanwhile are kept, and the same event
// seen both ways counts once.
async function loadEvents() {
  const since = (serverNow() - HISTORY_MINUTES * 60).toFixed(3);
  let until = "";
  try {
    for (let page = 0; page < EVENTS_PAGES; page++) {
      const { events } = await api(`/v1/events?since=${since}&limit=${EVENTS_PAGE}${until}`);
      // the newest events that match, oldest first: a full page may have older ones before it
      if (!addEvents(events) || events.length < EVENTS_PAGE) break;
      until = `&until=${events[0].time}`;
    }
    state.eventLog = "loaded";
  } catch (error) {
    // 404: this server keeps no event log (--data-dir ''), so the timeline starts empty
    state.eventLog = error.status === 404 ? "off" : `not loaded: ${error.message}`;
  }
  renderEvents();
}

// Whether any of them was new.
function addEvents(events) {
  let added = false;
  for (const e of events) added = timeline.add(e) || added;
  if (added && !renderPending) {
    // a burst of events (a scene change starts many) is drawn once
    renderPending = true;
    setTimeout(renderEvents, EVENTS_REDRAW_MS);
  }
  return added;
}
let renderPending = false;

function renderEvents() {
  renderPending = false;
  timeline.prune();
  timeline.render(Number($("timeline-minutes").value), watch.live, watch.known);
  watch.renderLive();
  const log = state.eventLog;
  $("event-log-state").textContent = log === "loaded" ? "" : log === "off"
    ? "the server keeps no event log: live events only" : log === "not loaded" ? "" : `event log ${log}`;
  $("event-log-state").className = log.startsWith("not loaded:") ? "stats bad" : "stats";
  $("event-list").innerHTML = timeline.latest(LATEST_EVENTS).map(eventLine).join("");
}

function eventLine(e) {
  const what = e.state === "start" ? "started"
    : typeof e.duration_s === "number" ? `ended after ${e.duration_s.toFixed(1)} s` : "ended";
  const score = (Math.round(e.score * 10) / 10 || 0).toFixed(1); // never "-0.0"
  return `<li class="${e.state === "start" ? "start" : "end"}"><span class="when">${clock(e.time)}</span>`
    + ` <b>${escapeHtml(rowName(e))}</b> ${what}`
    + ` <small>${escapeHtml(e.stream)} · client ${escapeHtml(e.client)} · score ${score}</small></li>`;
}

function watchMessage(text) {
  const el = $("watch-message");
  el.textContent = text;
  el.hidden = false;
}

// --- helpers --------------------------------------------------------------------------------------

function percentile(sorted, q) {
  const rank = (sorted.length - 1) * q / 100;
  const lo = Math.floor(rank), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function legend() {
  $("stage-legend").innerHTML = ["decode", "queue", "preprocess", "encode", "similarity", "network"]
    .map((name, i) => `<span><i style="background:${COLORS[i]}"></i>${name}</span>`).join("");
}

state.demo = new Demo($("demo"), { api, escapeHtml, labelSets: () => state.labels, welcome: () => state.welcome });
$("camera-toggle").onclick = toggleCamera;
$("mic-toggle").onclick = toggleMic;
for (const box of document.querySelectorAll(".label-set")) box.querySelector(".save").onclick = () => saveLabels(box);
$("timeline-minutes").onchange = renderEvents;
legend();
listDevices();
connect();
setInterval(renderCameraStats, 500);
setInterval(renderEvents, 1000); // open events grow, old ones slide out
