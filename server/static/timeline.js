// Events of every stream as intervals, one row per stream and label, drawn as bars over the last minutes.
// Pure parts (keys, intervals) are exported on their own so the page's tests can feed them events.

export const HISTORY_MINUTES = 15; // what is loaded from the event log and kept
const MIN_BAR_PERCENT = 0.4; // an instant (or very short) event still shows as a sliver
const MAX_EVENTS = 5000; // kept in the page at most: past it the oldest go (an end knows its duration)

export const streamKey = (client, modality, stream) => `${client}/${modality}/${stream}`;
export const rowKey = (e) => `${streamKey(e.client, e.modality, e.stream)}/${e.group ?? ""}/${e.label ?? ""}`;
// The same event seen twice (once live, once from the log after a reconnect) counts once.
const eventId = (e) => `${rowKey(e)}/${e.state}/${e.seq}/${e.time}`;

// What a row is called: the label, or "any <group>" for a group's own event.
export const rowName = (e) => (e.label === null || e.label === undefined ? `any ${e.group}` : e.label);

// Pair each row's starts and ends in time order. An end whose start is older than what is known gets
// its start back from duration_s; a start with no end yet is open (end: null).
export function intervalsOf(events) {
  const byRow = new Map();
  for (const e of [...events].sort((a, b) => a.time - b.time)) {
    const key = rowKey(e);
    if (!byRow.has(key)) byRow.set(key, { key, client: e.client, modality: e.modality, stream: e.stream,
      label: e.label ?? null, group: e.group ?? null, intervals: [] });
    const row = byRow.get(key);
    const last = row.intervals[row.intervals.length - 1];
    if (e.state === "start") {
      if (last && last.end === null) continue; // a repeated start: the event is already open
      row.intervals.push({ start: e.time, end: null, score: e.score });
    } else if (last && last.end === e.time) {
      continue; // the same end twice
    } else if (last && last.end === null) {
      last.end = e.time;
      last.duration = e.duration_s ?? e.time - last.start;
    } else {
      const duration = e.duration_s ?? 0;
      row.intervals.push({ start: e.time - duration, end: e.time, score: null, duration });
    }
  }
  return [...byRow.values()];
}

export class Timeline {
  constructor(el, { now, escapeHtml }) {
    this.el = el;
    this.now = now; // the server's clock, in seconds
    this.escapeHtml = escapeHtml;
    this.events = new Map();
    this.rows = [];
  }

  add(event) {
    const id = eventId(event);
    if (this.events.has(id)) return false;
    this.events.set(id, event);
    this.rows = null; // recomputed on the next read
    return true;
  }

  // Forget what is older than the history kept, and how many events are kept at all.
  prune() {
    const oldest = this.now() - HISTORY_MINUTES * 60;
    const ended = new Set();
    for (const row of this.intervalRows()) {
      if (row.intervals.every((i) => i.end !== null && i.end < oldest)) ended.add(row.key);
    }
    let dropped = false;
    for (const [id, e] of this.events) {
      if (ended.has(rowKey(e))) { this.events.delete(id); dropped = true; }
    }
    if (this.events.size > MAX_EVENTS) {
      const excess = [...this.events].sort(([, a], [, b]) => a.time - b.time).slice(0, this.events.size - MAX_EVENTS);
      for (const [id] of excess) this.events.delete(id);
      dropped = true;
    }
    if (dropped) this.rows = null;
  }

  intervalRows() {
    if (this.rows === null) this.rows = intervalsOf(this.events.values());
    return this.rows;
  }

  // The labels of a stream that are in an event now (started, not ended).
  openIn(key) {
    return this.intervalRows()
      .filter((row) => streamKey(row.client, row.modality, row.stream) === key)
      .filter((row) => row.intervals.length && row.intervals[row.intervals.length - 1].end === null)
      .map((row) => ({ name: rowName(row), group: row.group, own: row.label === null }));
  }

  // live: Map streamKey -> {own}, the streams the server says are live now, in its order. An open
  // interval of a stream that is no longer live lost its end (a server that stopped): it is drawn to
  // its last known moment, not grown forever.
  render(minutes, live, streamsKnown) {
    const now = this.now();
    const from = now - minutes * 60;
    const span = now - from;
    const shown = this.intervalRows()
      .map((row) => ({ ...row, intervals: row.intervals.filter((i) => (i.end ?? now) >= from) }))
      .filter((row) => row.intervals.length);
    if (!shown.length) {
      this.el.innerHTML = `<p class="empty">No events in the last ${minutes} min.</p>`;
      return;
    }
    const streams = new Map();
    for (const row of shown) {
      const key = streamKey(row.client, row.modality, row.stream);
      if (!streams.has(key)) streams.set(key, { key, client: row.client, modality: row.modality, stream: row.stream, rows: [] });
      streams.get(key).rows.push(row);
    }
    const order = [...live.keys()];
    const rank = (key) => (order.includes(key) ? order.indexOf(key) : order.length);
    const sorted = [...streams.values()].sort((a, b) => rank(a.key) - rank(b.key) || a.key.localeCompare(b.key));
    const esc = this.escapeHtml;
    const html = [];
    for (const s of sorted) {
      const isLive = live.has(s.key);
      const tags = [isLive ? "" : "ended", live.get(s.key)?.own ? "this page" : ""].filter(Boolean);
      html.push(`<section class="tl-stream${isLive ? "" : " ended"}" data-stream="${esc(s.stream)}" data-client="${esc(s.client)}"`
        + ` data-modality="${esc(s.modality)}"><div class="tl-head"><span class="modality ${esc(s.modality)}">${esc(s.modality)}</span>`
        + ` ${esc(s.stream)} <small>client ${esc(s.client)}${tags.map((t) => ` · ${t}`).join("")}</small></div>`);
      // a group's own row first, then its labels; ungrouped labels by name
      s.rows.sort((a, b) => (a.group ?? a.label).localeCompare(b.group ?? b.label)
        || (a.label === null ? -1 : b.label === null ? 1 : a.label.localeCompare(b.label)));
      for (const row of s.rows) {
        const bars = row.intervals.map((i) => {
          const open = i.end === null;
          const lost = open && streamsKnown && !isLive;
          const end = open ? (lost ? i.start : now) : i.end;
          const left = Math.max(0, (i.start - from) / span * 100);
          const width = Math.max(MIN_BAR_PERCENT, (Math.min(end, now) - Math.max(i.start, from)) / span * 100);
          const title = `${rowName(row)} · ${clock(i.start)}`
            + (open ? (lost ? " · end not recorded" : ` · ongoing ${(now - i.start).toFixed(0)} s`) : ` · ${(i.duration ?? i.end - i.start).toFixed(1)} s`)
            + (i.score === null ? "" : ` · started at score ${i.score.toFixed(1)}`);
          const cls = `tl-bar${open && !lost ? " open" : ""}${lost ? " lost" : ""}`;
          return `<span class="${cls}" style="left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%;`
            + `background:${colorOf(row.group ?? row.label)}" title="${esc(title)}"></span>`;
        }).join("");
        const group = row.group && row.label !== null ? ` <small>${esc(row.group)}</small>` : "";
        html.push(`<div class="tl-row${row.label === null ? " group" : ""}" data-label="${esc(rowName(row))}">`
          + `<span class="tl-label" title="${esc(rowName(row))}">${esc(rowName(row))}${group}</span>`
          + `<span class="tl-track">${bars}</span></div>`);
      }
      html.push("</section>");
    }
    html.push(axis(minutes));
    this.el.innerHTML = html.join("");
  }

  // The newest events first, as lines of text.
  latest(count) {
    return [...this.events.values()].sort((a, b) => b.time - a.time).slice(0, count);
  }
}

function axis(minutes) {
  const step = minutes <= 1 ? 10 : minutes <= 5 ? 60 : 180; // seconds between ticks
  const ticks = [];
  for (let back = 0; back <= minutes * 60; back += step) {
    const left = 100 - (back / (minutes * 60)) * 100;
    const text = back === 0 ? "now" : back < 60 ? `−${back} s` : `−${back / 60} min`;
    ticks.push(`<span class="tick" style="left:${left.toFixed(2)}%">${text}</span>`);
  }
  return `<div class="tl-row tl-axis"><span class="tl-label"></span><span class="tl-track">${ticks.join("")}</span></div>`;
}

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

const PALETTE = ["#4f9dff", "#f6c453", "#4fd1c5", "#f78fb3", "#9b8cff", "#ff9f43", "#7bed9f", "#eccc68"];
function colorOf(name) {
  let hash = 0;
  for (const c of String(name)) hash = (hash * 31 + c.codePointAt(0)) | 0;
  return PALETTE[Math.abs(hash) % PALETTE.length];
}
