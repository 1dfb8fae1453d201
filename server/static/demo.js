// "Try it": the CLIP & CLAP demo's flow. Drop an image or a sound file, give labels (typed, pasted, or 10 /
// 100 / 500 filled in), classify through the HTTP API, and see each stage's time and what encoding the
// labels cost, run after run: "10, then 100, then 500 labels" reads down the runs table.

// The media types the HTTP API takes, and file endings for files the browser gives no type.
const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"];
const AUDIO_TYPES = ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg"];
const ENDINGS = { jpg: "image", jpeg: "image", png: "image", webp: "image", wav: "audio", flac: "audio", ogg: "audio", oga: "audio" };
const FILL_COUNTS = [10, 100, 500];
// In the order a request spends them: the labels are encoded before the input joins the model's queue.
const STAGES = [
  ["decode_ms", "decode"], ["text_ms", "text encoding"], ["queue_ms", "queue"], ["preprocess_ms", "preprocess"],
  ["encode_ms", "encode"], ["similarity_ms", "similarity"],
];
const STAGE_COLORS = ["#f6c453", "#ff9f43", "#9b8cff", "#4fd1c5", "#4f9dff", "#f78fb3", "#8a90a0"];
const SCORE_MEANING = {
  softmax: ["softmax", "the labels share 1: relative to the others"],
  sigmoid: ["sigmoid", "each label on its own, 0 to 1"],
};
// Generated labels pad the label files' own when a fill asks for more than they hold.
const PADDING = {
  image: [
    ["red", "blue", "green", "yellow", "black", "white", "wooden", "metal", "plastic", "glass", "old", "new",
      "small", "large", "broken", "shiny", "striped", "round", "folded", "vintage"],
    ["chair", "lamp", "bottle", "kettle", "umbrella", "bicycle", "guitar", "clock", "backpack", "teapot", "vase",
      "helmet", "bucket", "ladder", "basket", "mailbox", "suitcase", "toaster", "candle", "mirror", "shoe", "hat",
      "kite", "boat", "truck", "fence", "bench", "door", "window", "staircase"],
  ],
  audio: [
    ["loud", "quiet", "distant", "nearby", "rhythmic", "steady", "sudden", "muffled", "echoing", "high-pitched",
      "low", "fast", "slow", "faint", "sharp", "metallic", "rattling", "humming", "repeated", "short"],
    ["engine", "bell", "drum", "whistle", "siren", "footsteps", "hammering", "buzzing", "clapping", "splashing",
      "ticking", "beeping", "knocking", "scraping", "rustling", "dripping", "crackling", "squeaking", "thumping",
      "chirping", "horn", "motor", "fan", "alarm", "chime", "gong", "rumble", "click", "hiss", "whir"],
  ],
};

// --- pure helpers (the tests call them too) ------------------------------------------------------

// "image", "audio", or null for a file the API does not take: by its type, else by its name's ending.
export function modalityOf(file) {
  const type = (file.type || "").toLowerCase();
  if (IMAGE_TYPES.includes(type)) return "image";
  if (AUDIO_TYPES.includes(type)) return "audio";
  if (type && type !== "application/octet-stream") return null;
  return ENDINGS[(file.name || "").toLowerCase().split(".").pop()] ?? null;
}

// The labels in a text: one per line, or comma-separated (a line with '=' gives its own prompts, which may
// hold commas, so it is one label), or a pasted JSON array. Blank lines and '#' comments are left out, and a
// name given twice (in any case) counts once, as the server counts it.
export function parseLabels(text) {
  const trimmed = text.trim();
  let items = null;
  if (trimmed.startsWith("[")) {
    try {
      const parsed = JSON.parse(trimmed);
      if (Array.isArray(parsed)) items = parsed.map(String);
    } catch {
      // not JSON after all: read as lines
    }
  }
  items ??= text.split(/\r?\n/).flatMap((line) => (line.includes("=") ? [line] : line.split(",")));
  const seen = new Set();
  const labels = [];
  for (const item of items) {
    const label = item.trim();
    if (!label || label.startsWith("#")) continue;
    const name = label.split("=")[0].trim().toLowerCase();
    if (seen.has(name)) continue;
    seen.add(name);
    labels.push(label);
  }
  return labels;
}

// ``count`` labels for a fill: the label file's names first, then generated ones.
export function fillLabels(fileNames, modality, count) {
  const names = [];
  const seen = new Set();
  const add = (name) => {
    const key = name.toLowerCase();
    if (names.length < count && !seen.has(key)) { seen.add(key); names.push(name); }
  };
  fileNames.forEach(add);
  const [adjectives, nouns] = PADDING[modality] ?? PADDING.image;
  for (const noun of nouns) for (const adjective of adjectives) add(`${adjective} ${noun}`);
  for (let i = 1; names.length < count; i++) add(`${modality} example ${i}`);
  return names;
}

// --- the panel -----------------------------------------------------------------------------------

export class Demo {
  // api(path, options): the page's fetch with its token; labelSets(): GET /v1/labels as last loaded;
  // welcome(): the server's welcome (which modalities it serves, each one's scoring).
  constructor(root, { api, escapeHtml, labelSets, welcome }) {
    this.root = root;
    this.api = api;
    this.escapeHtml = escapeHtml;
    this.labelSets = labelSets;
    this.welcome = welcome;
    this.file = null;
    this.modality = null;
    this.previewUrl = null;
    this.busy = false;
    this.runs = []; // one per answered request: {modality, file, encode, body, roundTripMs}
    this.last = null;
    this.el = (name) => root.querySelector(`[data-demo=${name}]`);
    this.wire();
    this.renderCount();
  }

  wire() {
    const drop = this.el("drop");
    const picker = this.el("picker");
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer?.files?.[0];
      if (file) this.choose(file);
    });
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); picker.click(); }
    });
    // A file dropped just beside the zone would make the browser leave the page (and the runs table) for it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if ([...(event.dataTransfer?.types ?? [])].includes("Files")) event.preventDefault();
      });
    }
    picker.addEventListener("change", () => { if (picker.files[0]) this.choose(picker.files[0]); });
    this.el("labels").addEventListener("input", () => this.renderCount());
    for (const button of this.root.querySelectorAll("[data-fill]")) {
      button.addEventListener("click", () => this.fill(Number(button.dataset.fill)));
    }
    this.el("classify").addEventListener("click", () => this.classify());
    this.el("clear-runs").addEventListener("click", () => { this.runs = []; this.renderRuns(); });
  }

  choose(file) {
    const modality = modalityOf(file);
    if (!modality) {
      this.say(`${file.name} is not a file the server classifies: give a JPEG, PNG or WebP image, or a WAV, FLAC or OGG sound.`, true);
      return;
    }
    this.file = file;
    this.modality = modality;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(file);
    const image = this.el("image");
    const sound = this.el("sound");
    image.hidden = modality !== "image";
    sound.hidden = modality !== "audio";
    (modality === "image" ? image : sound).src = this.previewUrl;
    this.el("file-name").textContent = `${file.name} · ${modality} · ${(file.size / 1024).toFixed(0)} KiB`;
    this.say(this.served(modality) ? "" : `This server does not serve ${modality}.`, true);
    this.renderCount();
  }

  // The modality the labels are for: the chosen file's, else images.
  get target() {
    return this.modality ?? "image";
  }

  served(modality) {
    const modalities = this.welcome()?.modalities;
    return !modalities || modality in modalities;
  }

  fill(count) {
    const modality = this.target;
    const set = this.labelSets()?.[modality];
    const fileNames = set ? set.labels.map((entry) => entry.label) : [];
    const labels = fillLabels(fileNames, modality, count);
    this.el("labels").value = labels.join("\n");
    const made = labels.length - Math.min(fileNames.length, count);
    const cached = this.el("encode-all").checked ? ""
      : " The label file's labels are in the cache already: tick \u201cencode every label\u201d to time the text encoder on them too.";
    this.say(`${count} ${modality} labels: ${count - made} from the label file${made ? `, ${made} generated` : ""}.${cached}`, false);
    this.renderCount();
  }

  renderCount() {
    const count = parseLabels(this.el("labels").value).length;
    this.el("count").textContent = count ? `${count} label${count === 1 ? "" : "s"} for ${this.target}`
      : `none: the ${this.target} label file's labels are used`;
  }

  async classify() {
    if (this.busy) return;
    if (!this.file) { this.say("Drop an image or a sound file first (or pick one).", true); return; }
    if (!this.served(this.modality)) { this.say(`This server does not serve ${this.modality}.`, true); return; }
    const labels = parseLabels(this.el("labels").value);
    const encode = this.el("encode-all").checked ? "all" : "new";
    const form = new FormData();
    form.append("file", this.file, this.file.name);
    if (labels.length) {
      form.append("labels", JSON.stringify(labels));
      form.append("encode", encode);
    }
    const button = this.el("classify");
    this.busy = true;
    button.disabled = true;
    this.say(`classifying against ${labels.length || "the file's"} labels…`, false);
    const started = performance.now();
    try {
      const body = await this.api(`/v1/classify/${this.modality}`, { method: "POST", body: form });
      const run = { modality: this.modality, file: this.file.name, encode: labels.length ? encode : "file", body, roundTripMs: performance.now() - started };
      this.runs.push(run);
      this.last = run;
      this.say("", false);
      this.renderResult(run);
      this.renderRuns();
    } catch (error) {
      this.say(`not classified: ${error.message}`, true);
    } finally {
      this.busy = false;
      button.disabled = false;
    }
  }

  renderResult(run) {
    const { body } = run;
    const kind = this.welcome()?.modalities?.[run.modality]?.scoring?.kind;
    const [name, meaning] = SCORE_MEANING[kind] ?? ["score", ""];
    this.el("score-kind").textContent = meaning ? `${name}: ${meaning}` : "";
    const esc = this.escapeHtml;
    this.el("top").innerHTML = `<table class="demo-top"><thead><tr><th>label</th><th>score (${esc(name)})</th><th class="num">cosine</th></tr></thead><tbody>`
      + body.top.map((t) => `<tr><td class="name">${esc(t.label)}</td>`
        + `<td><span class="track"><span class="fill" style="width:${(t.score * 100).toFixed(1)}%"></span></span>`
        + `<span class="num">${t.score.toFixed(3)}</span></td><td class="num">${t.similarity.toFixed(3)}</td></tr>`).join("")
      + "</tbody></table>" + (body.top.length ? "" : `<p class="note">no label scored over the minimum</p>`);
    this.renderStages(run);
  }

  renderStages({ body, roundTripMs }) {
    const t = body.timings;
    const total = t.total_ms;
    const rows = STAGES.map(([key, name]) => [name, t[key] ?? 0]);
    // What the stages leave out of the total: reading the request, waiting for the model's thread.
    rows.push(["other (reading, waiting)", Math.max(0, total - rows.reduce((sum, [, ms]) => sum + ms, 0))]);
    const labels = body.labels;
    const note = labels ? ` (${labels.count} labels: ${labels.encoded} encoded, ${labels.cached} cached${labels.source === "file" ? ", the label file's" : ""})` : "";
    this.el("stack").innerHTML = rows.map(([name, ms], i) => `<span title="${name} ${ms.toFixed(1)} ms" style="width:${total ? (ms / total * 100).toFixed(2) : 0}%;background:${STAGE_COLORS[i]}"></span>`).join("");
    this.el("stages").innerHTML = rows.map(([name, ms], i) => `<tr data-stage="${name}"><td><i style="background:${STAGE_COLORS[i]}"></i>${name}${name === "text encoding" ? note : ""}</td><td class="num">${ms.toFixed(1)} ms</td></tr>`).join("")
      + `<tr class="total" data-stage="total"><td>total (server)</td><td class="num">${total.toFixed(1)} ms</td></tr>`
      + `<tr data-stage="round trip"><td>round trip (this page)</td><td class="num">${roundTripMs.toFixed(1)} ms</td></tr>`;
  }

  renderRuns() {
    const esc = this.escapeHtml;
    const scale = Math.max(1, ...this.runs.map((r) => r.body.timings.total_ms));
    const bar = (ms, cls) => `<span class="runbar ${cls}"><span style="width:${(ms / scale * 100).toFixed(1)}%"></span></span>${ms.toFixed(1)}`;
    this.el("runs").innerHTML = this.runs.map((run, i) => {
      const { labels, timings, top } = run.body;
      return `<tr data-count="${labels.count}" data-encoded="${labels.encoded}" data-cached="${labels.cached}">`
        + `<td class="num">${i + 1}</td><td>${esc(run.modality)} · ${esc(run.file)}</td>`
        + `<td class="num count">${labels.count}${labels.source === "file" ? " (file)" : ""}</td>`
        + `<td class="num encoded">${labels.encoded}${run.encode === "all" ? " (all)" : ""}</td><td class="num cached">${labels.cached}</td>`
        + `<td class="num text">${bar(timings.text_ms ?? 0, "text")}</td><td class="num total">${bar(timings.total_ms, "total")}</td>`
        + `<td class="name">${top.length ? esc(top[0].label) : ""}</td></tr>`;
    }).join("");
    this.el("runs-empty").hidden = this.runs.length > 0;
  }

  say(text, isError) {
    const el = this.el("message");
    el.textContent = text;
    el.className = isError ? "message error" : "message";
    el.hidden = !text;
  }
}
