// The operator's page: polls /api/status and, when the preview is on, fetches /frame.jpg as
// soon as a newer frame exists (the server encodes at most a few per second for all viewers).
"use strict";

const STATUS_INTERVAL_MS = 500;
const $ = (id) => document.getElementById(id);
let statusUpdates = 0;
let framesShown = 0;

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function definitions(list, entries) {
  list.replaceChildren(...entries.flatMap(([name, value]) => [element("dt", name), element("dd", String(value))]));
}

function showTracks(tracks) {
  $("tracks").replaceChildren(...tracks.map((t) => {
    const row = element("li");
    row.dataset.track = t.track_id;
    const bar = element("div", undefined, "bar");
    const fill = element("div");
    fill.style.width = Math.round(t.confidence * 100) + "%";
    bar.append(fill);
    row.append(element("span", "#" + t.track_id), element("span", t.label, "label"), bar,
      element("span", t.from_llm ? "LLM" : (t.llm_label ? "llm:" + t.llm_label : ""), t.from_llm ? "llm" : ""));
    row.title = Math.round(t.confidence * 100) + "% confidence";
    return row;
  }));
  if (!tracks.length) $("tracks").append(element("li", "no face in view", "empty"));
}

function showStatus(s) {
  statusUpdates += 1;
  document.body.dataset.updates = statusUpdates;
  document.body.dataset.frames = s.frames;
  const latency = s.latency_ms === null ? "-" : s.latency_ms.toFixed(1) + " ms";
  $("figures").textContent = `${s.fps.toFixed(1)} frames/s · capture to result ${latency} · ${s.frames} frames`;
  const connected = s.source.state === "connected";
  $("connection").textContent = s.source.state;
  $("connection").className = "badge " + (connected ? "ok" : "bad");
  showTracks(s.tracks);
  definitions($("source"), [["input", s.source.name], ["state", s.source.state],
    ["reconnects", s.source.reconnects], ["dropped frames", s.source.dropped]]);
  definitions($("llm"), s.llm === null ? [["state", "off"]]
    : Object.entries(s.llm).map(([key, value]) => [key.replaceAll("_", " "), value]));
  $("events").replaceChildren(...s.events.map((e) => element("li",
    `${e.time_s ?? ""}s ${e.event} #${e.track_id ?? ""} ${e.label ?? e.llm_label ?? ""}`)));
  $("frame").hidden = !s.preview;
  $("no-preview").hidden = s.preview;
}

async function pollStatus() {
  try {
    const reply = await fetch("/api/status", { cache: "no-store" });
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const status = await reply.json();
    showStatus(status);
    if (status.preview && !pollFrames.running) pollFrames();
  } catch (err) {
    $("connection").textContent = "disconnected";
    $("connection").className = "badge bad";
  }
  setTimeout(pollStatus, STATUS_INTERVAL_MS);
}

// Decode each frame off-screen before it replaces the one on screen: the picture never goes
// blank while a frame loads, and dataset.seq always names the frame that is shown.
async function showDecoded(image, url) {
  const next = new Image();
  next.src = url;
  try {
    await next.decode();
  } catch (err) {
    URL.revokeObjectURL(url);
    return false;
  }
  const previous = image.src;
  image.src = url;
  if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
  return true;
}

async function pollFrames() {
  pollFrames.running = true;
  let seq = 0;
  const image = $("frame");
  for (;;) {
    try {
      const reply = await fetch("/frame.jpg?after=" + seq, { cache: "no-store" });
      if (reply.status === 200) {
        seq = Number(reply.headers.get("X-Frame-Seq")) || seq + 1;
        if (!(await showDecoded(image, URL.createObjectURL(await reply.blob())))) continue;
        framesShown += 1;
        image.dataset.seq = seq;
        image.dataset.shown = framesShown;
      } else if (reply.status !== 204) {
        await new Promise((done) => setTimeout(done, 1000));
      }
    } catch (err) {
      await new Promise((done) => setTimeout(done, 1000));
    }
  }
}

pollStatus();
