// Every live stream of the server as a card: what it is, whose it is, a thumbnail for images, its
// current top labels and the labels in an event now. Fed by the watch messages (streams, thumbnail,
// watched result copies) and by the page's own results.
import { clock, streamKey } from "/static/timeline.js";

const TOP_SHOWN = 3;
const LIVE_SHOWN = 6; // labels in an event shown on a card; the rest are counted
const OWN_THUMBNAIL_EVERY_MS = 1000; // like the server's thumbnails: at most one a second

export class Watch {
  constructor(el, { escapeHtml, timeline }) {
    this.el = el;
    this.escapeHtml = escapeHtml;
    this.timeline = timeline;
    this.ownClient = null;
    this.live = new Map(); // streamKey -> the server's entry, plus own: true for this page's streams
    this.known = false; // a streams message has come since the last connect
    this.streamsMessages = 0;
    this.cards = new Map(); // streamKey -> {el, thumbUrl, thumbFromServer, ownThumbAt, top, silent}
  }

  connected(ownClient) {
    this.ownClient = ownClient;
    this.known = false;
  }

  // Until the server lists the streams again, what is shown is what was: say so, keep it.
  disconnected() {
    this.known = false;
    this.el.classList.add("stale");
  }

  onStreams(msg) {
    this.streamsMessages += 1;
    this.known = true;
    this.el.classList.remove("stale");
    this.live = new Map();
    for (const s of msg.streams) {
      this.live.set(streamKey(s.client, s.modality, s.stream), { ...s, own: s.client === this.ownClient });
    }
    for (const [key, card] of this.cards) {
      if (this.live.has(key)) continue;
      if (card.thumbUrl) URL.revokeObjectURL(card.thumbUrl);
      card.el.remove();
      this.cards.delete(key);
    }
    for (const [key, s] of this.live) this.card(key, s);
    this.renderEmpty();
    this.renderLive();
  }

  // A result of any stream: a watched copy carries its client; the page's own do not.
  onResult(msg) {
    const key = streamKey(msg.client ?? this.ownClient, msg.modality, msg.stream);
    const card = this.cards.get(key);
    if (!card) return; // not listed (yet): the next streams message brings its card
    const entry = this.live.get(key);
    if (msg.labels_version !== undefined) entry.labels_version = msg.labels_version;
    const top = card.el.querySelector(".top");
    if (msg.silent) {
      top.innerHTML = `<li class="silent">silent</li>`;
    } else {
      const esc = this.escapeHtml;
      top.innerHTML = msg.top.slice(0, TOP_SHOWN).map((t) => `<li><span class="name"><span class="label">${esc(t.label)}</span>`
        + `${t.group ? ` <small>${esc(t.group)}</small>` : ""}</span>`
        + `<span class="track"><span class="fill" style="width:${(t.score * 100).toFixed(1)}%"></span></span>`
        + `<span class="num">${(t.score * 100).toFixed(0)}%</span></li>`).join("");
    }
    this.footer(card.el, entry);
  }

  onThumbnail(msg) {
    const card = this.cards.get(streamKey(msg.client, msg.modality, msg.stream));
    if (!card) return;
    card.thumbFromServer = true;
    this.showThumbnail(card, new Blob([msg.data], { type: `image/${msg.format || "jpeg"}` }));
  }

  // The page's own camera: the JPEG it just sent stands in when the server sends no thumbnail of it.
  ownFrame(stream, blob) {
    const card = this.cards.get(streamKey(this.ownClient, "image", stream));
    if (!card || card.thumbFromServer) return;
    const now = performance.now();
    if (now - card.ownThumbAt < OWN_THUMBNAIL_EVERY_MS) return;
    card.ownThumbAt = now;
    this.showThumbnail(card, blob);
  }

  showThumbnail(card, blob) {
    const img = card.el.querySelector("img.thumb");
    if (!img) return;
    const previous = card.thumbUrl;
    card.thumbUrl = URL.createObjectURL(blob);
    img.src = card.thumbUrl;
    img.hidden = false;
    if (previous) URL.revokeObjectURL(previous); // the old picture's bytes go once the new one is set
  }

  card(key, s) {
    if (this.cards.has(key)) {
      this.footer(this.cards.get(key).el, s);
      return;
    }
    const esc = this.escapeHtml;
    const el = document.createElement("article");
    el.className = `stream-card ${s.modality}${s.own ? " own" : ""}`;
    el.dataset.stream = s.stream;
    el.dataset.client = s.client;
    el.dataset.modality = s.modality;
    const picture = s.modality === "image"
      ? `<img class="thumb" alt="${esc(s.stream)}" hidden>`
      : `<span class="sound" aria-hidden="true">♪</span>`;
    el.innerHTML = `<header><span class="modality ${esc(s.modality)}">${esc(s.modality)}</span>`
      + ` <b class="name">${esc(s.stream)}</b> <small class="client">client ${esc(s.client)}</small>`
      + (s.own ? ` <span class="own-tag">this page</span>` : "") + `</header>`
      + `<div class="body"><div class="picture">${picture}</div><ol class="top"><li class="waiting">waiting for a result…</li></ol></div>`
      + `<div class="live"></div><footer></footer>`;
    this.footer(el, s);
    // live streams in the server's order: a new one goes last
    this.el.append(el);
    this.cards.set(key, { el, thumbUrl: null, thumbFromServer: false, ownThumbAt: -Infinity });
  }

  footer(el, s) {
    const parts = [s.since ? `since ${clock(s.since)}` : "", s.labels_version ? `labels v${s.labels_version}` : ""];
    el.querySelector("footer").textContent = parts.filter(Boolean).join(" · ");
  }

  // The labels of each card that are in an event now, from the timeline's open intervals.
  renderLive() {
    const esc = this.escapeHtml;
    for (const [key, card] of this.cards) {
      const open = this.timeline.openIn(key);
      const box = card.el.querySelector(".live");
      // groups first: "any animal" says more than which animal
      open.sort((a, b) => Number(b.own) - Number(a.own));
      const html = open.slice(0, LIVE_SHOWN).map((o) => `<span class="in-event${o.own ? " group" : ""}"><i></i>${esc(o.name)}</span>`).join("")
        + (open.length > LIVE_SHOWN ? `<span class="more">+${open.length - LIVE_SHOWN} more</span>` : "");
      if (box.innerHTML !== html) box.innerHTML = html;
      card.el.classList.toggle("eventful", open.length > 0);
    }
  }

  renderEmpty() {
    let empty = this.el.querySelector(".empty");
    if (this.cards.size) { empty?.remove(); return; }
    if (!empty) {
      empty = document.createElement("p");
      empty.className = "empty";
      this.el.append(empty);
    }
    empty.textContent = "No live streams. Start the camera or the microphone below, or stream from another client.";
  }
}
