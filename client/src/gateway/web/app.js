// Medley web player: search as you type, a queue, play/pause/seek, the next track
// prefetched, and where each song's bytes came from. Talks to the local gateway only.
"use strict";

const $ = (sel) => document.querySelector(sel);
const audio = $("#audio");
const state = { queue: [], index: -1, reported: false, prefetched: null, seeking: false };

function clock(s) {
  if (!isFinite(s) || s < 0) s = 0;
  s = Math.floor(s);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function bytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

function status(text, error) {
  const el = $("#status");
  el.textContent = text || "";
  el.classList.toggle("error", !!error);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

// A table cell holding one button; returns both.
function buttonCell(cls, text, title) {
  const b = document.createElement("button");
  b.className = cls;
  b.type = "button";
  b.textContent = text;
  b.title = title;
  const td = document.createElement("td");
  td.append(b);
  return [td, b];
}

// --- search ---------------------------------------------------------------------------

let searchTimer = null;
let searchSeq = 0;

async function search(q) {
  const seq = ++searchSeq;
  if (!q.trim()) {
    render([], 0);
    return;
  }
  try {
    const r = await fetch(`/api/search?q=${encodeURIComponent(q)}&limit=50`);
    const body = await r.json();
    if (seq !== searchSeq) return; // a newer query is on its way
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    render(body.results, body.total);
  } catch (e) {
    if (seq === searchSeq) status(`search failed: ${e.message}`, true);
  }
}

function render(results, total) {
  const tbody = $("#results tbody");
  tbody.replaceChildren();
  results.forEach((hit, i) => {
    const tr = document.createElement("tr");
    tr.className = "song";
    tr.dataset.id = hit.id;
    const [playCell] = buttonCell("play", "▶", "Play");
    const [addCell, add] = buttonCell("add", "+", "Add to queue");
    tr.append(playCell, cell(hit.title), cell(hit.artist), cell(hit.album), cell(hit.year),
      cell(hit.duration_ms ? clock(hit.duration_ms / 1000) : "", "num"), addCell);
    tr.addEventListener("click", (ev) => {
      if (ev.target === add) {
        enqueue([hit]);
      } else {
        // Play this one, with the results after it queued behind.
        state.queue = results.slice(i);
        playAt(0);
      }
    });
    tbody.append(tr);
  });
  $("#total").textContent = results.length ? `${results.length} of ${total} songs` : (total === 0 && $("#search").value.trim() ? "no songs found" : "");
  markCurrent();
}

$("#search").addEventListener("input", (ev) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => search(ev.target.value), 120);
});

// --- queue ----------------------------------------------------------------------------

function enqueue(hits) {
  state.queue.push(...hits);
  renderQueue();
  if (state.index < 0) playAt(0);
}

function renderQueue() {
  const ol = $("#queue");
  ol.replaceChildren();
  state.queue.forEach((hit, i) => {
    const li = document.createElement("li");
    li.textContent = `${hit.title}${hit.artist ? " — " + hit.artist : ""}`;
    li.className = i === state.index ? "current" : "";
    li.addEventListener("click", () => playAt(i));
    ol.append(li);
  });
  markCurrent();
}

function markCurrent() {
  const cur = state.queue[state.index];
  document.querySelectorAll("#results tr.song").forEach((tr) => {
    tr.classList.toggle("current", !!cur && tr.dataset.id === cur.id);
  });
}

$("#clear").addEventListener("click", () => {
  const cur = state.queue[state.index];
  state.queue = cur ? [cur] : [];
  state.index = cur ? 0 : -1;
  renderQueue();
});

// --- playback -------------------------------------------------------------------------

function playAt(i) {
  if (i < 0 || i >= state.queue.length) return;
  const hit = state.queue[i];
  state.index = i;
  state.reported = false;
  audio.src = `/stream/${hit.id}`;
  $("#now-title").textContent = hit.title;
  $("#now-artist").textContent = [hit.artist, hit.album].filter(Boolean).join(" — ");
  $("#delivery").textContent = "";
  status("loading…");
  renderQueue();
  audio.play().catch((e) => status(`cannot play: ${e.message}`, true));
}

function next() { if (state.index + 1 < state.queue.length) playAt(state.index + 1); }
function prev() {
  if (audio.currentTime > 3 || state.index === 0) audio.currentTime = 0;
  else playAt(state.index - 1);
}

$("#next").addEventListener("click", next);
$("#prev").addEventListener("click", prev);
$("#toggle").addEventListener("click", () => {
  if (state.index < 0 && state.queue.length) playAt(0);
  else if (audio.paused) audio.play().catch((e) => status(e.message, true));
  else audio.pause();
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === " " && ev.target.tagName !== "INPUT") {
    ev.preventDefault();
    $("#toggle").click();
  }
});

const seek = $("#seek");
seek.addEventListener("input", () => { state.seeking = true; $("#elapsed").textContent = clock(Number(seek.value)); });
seek.addEventListener("change", () => {
  state.seeking = false;
  audio.currentTime = Number(seek.value);
});

audio.addEventListener("playing", () => { status(""); $("#toggle").textContent = "▮▮"; });
audio.addEventListener("pause", () => { $("#toggle").textContent = "▶"; });
audio.addEventListener("waiting", () => status("buffering…"));
audio.addEventListener("loadedmetadata", () => {
  seek.max = String(audio.duration || 0);
  $("#duration").textContent = clock(audio.duration);
});
audio.addEventListener("timeupdate", () => {
  if (!state.seeking) seek.value = String(audio.currentTime);
  $("#elapsed").textContent = clock(audio.currentTime);
  const d = audio.duration;
  if (!isFinite(d) || d <= 0) return;
  // A play counts once half the song (or four minutes) was heard.
  if (!state.reported && (audio.currentTime >= d / 2 || audio.currentTime >= 240)) {
    state.reported = true;
    const cur = state.queue[state.index];
    if (cur) fetch(`/api/songs/${cur.id}/played`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    }).catch(() => {});
  }
  // Near the end, fetch the start of the next song so it begins at once.
  const nextHit = state.queue[state.index + 1];
  if (nextHit && state.prefetched !== nextHit.id && d - audio.currentTime < 30) {
    state.prefetched = nextHit.id;
    fetch(`/stream/${nextHit.id}`, { headers: { Range: "bytes=0-524287" } })
      .then((r) => r.arrayBuffer())
      .catch(() => {});
  }
});
audio.addEventListener("ended", next);
audio.addEventListener("error", () => {
  const e = audio.error;
  status(`playback error${e ? ` (code ${e.code}${e.message ? ": " + e.message : ""})` : ""}`, true);
});

// Where the playing song's bytes came from, refreshed every two seconds.
setInterval(async () => {
  const cur = state.queue[state.index];
  if (!cur) return;
  try {
    const r = await fetch(`/api/songs/${cur.id}`);
    if (!r.ok) return;
    const s = await r.json();
    const d = s.delivery;
    const peers = Object.values(s.sources).filter((x) => x.shards > 0).length;
    let text = `from cache ${bytes(d.cache_bytes)} · other listeners ${bytes(d.peer_bytes)}` +
      ` · hot nodes ${bytes(d.hot_bytes)} · rebuilt from shards ${bytes(d.rebuilt_bytes)} (${peers} nodes)`;
    if (s.bad_sources.length) text += ` · ${s.bad_sources.length} lying source(s) dropped`;
    $("#delivery").textContent = text;
  } catch (_) { /* the next tick retries */ }
}, 2000);
