// Gantry images page: live pull cards. The engine publishes a snapshot of each running pull
// (kind "pull") over /ws/events/; app.js re-dispatches it as a "gantry:pull" DOM event. Each
// snapshot redraws its card: one bar per layer (bytes done/total and speed, then
// "extracting", then done). Cards the server rendered (running and recent pulls) are updated
// the same way, so a reload or a return to the page picks a running pull up where it is.
// Snapshots carry a sequence number per pull: an older one than the card has, or one that
// would take an ended pull back to running, is dropped. While a pull runs and no snapshot
// came for a while (or on "gantry:resync"), the cards are read again from the server.
// Everything from the engine goes in through textContent/attributes, never as HTML.
(function () {
  "use strict";

  const pulls = document.getElementById("pulls");
  if (!pulls) return;
  const form = document.getElementById("pull-form");
  const formError = document.getElementById("pull-error");
  const ZERO_ID = "0".repeat(64);

  function human(n) {
    n = Number(n) || 0;
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function layerText(layer) {
    switch (layer.state) {
      case "waiting": return "waiting";
      case "downloading": {
        const speed = layer.speed ? ` · ${human(layer.speed)}/s` : "";
        return `${human(layer.done)} / ${human(layer.size)}${speed}`;
      }
      case "extracting": return `${human(layer.size)} · extracting`;
      case "done": return `${human(layer.size)} · done`;
      case "exists": return "already exists";
      case "error": return "failed";
      default: return layer.state || "";
    }
  }

  function role(card, name) { return card.querySelector(`[data-role="${name}"]`); }

  function newCard(job) {
    const card = document.createElement("article");
    card.className = "pull-job card";
    card.id = "pull-" + job.job;
    card.dataset.job = job.job;
    const head = document.createElement("header");
    head.className = "pull-head";
    const parts = [["span", "pill", "state"], ["code", "pull-ref", "ref"], ["span", "muted", "platform"],
      ["span", "muted pull-step", "step"], ["a", "pull-open", "image"]];
    for (const [tag, cls, name] of parts) {
      const el = document.createElement(tag);
      el.className = cls;
      el.dataset.role = name;
      head.appendChild(el);
    }
    role(head, "image").textContent = "Open image";
    role(head, "image").hidden = true;
    const error = document.createElement("p");
    error.className = "error";
    error.dataset.role = "error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const list = document.createElement("ol");
    list.className = "pull-layers";
    list.dataset.role = "layers";
    card.append(head, error, list);
    pulls.prepend(card);
    return card;
  }

  function layerRow(list, layer) {
    let row = Array.from(list.children).find((li) => li.dataset.digest === layer.digest);
    if (row) return row;
    row = document.createElement("li");
    row.className = "pull-layer";
    row.dataset.digest = layer.digest;
    const id = document.createElement("code");
    id.className = "layer-id";
    id.title = layer.digest;
    id.textContent = layer.short || String(layer.digest).slice(7, 19);
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", "layer " + id.textContent);
    const text = document.createElement("span");
    text.className = "layer-text";
    row.append(id, bar, text);
    list.appendChild(row);
    return row;
  }

  function drawLayer(row, layer) {
    row.dataset.state = layer.state;
    const bar = row.querySelector("progress");
    const size = Math.max(1, Number(layer.size) || 0);
    bar.max = size;
    bar.value = ["done", "exists", "extracting"].includes(layer.state) ? size : Math.min(size, Number(layer.done) || 0);
    row.querySelector(".layer-text").textContent = layerText(layer);
  }

  const RANK = { resolving: 0, pulling: 1, done: 2, error: 2 };
  // Is this snapshot ({state, seq}) newer than what the card shows?
  function newer(job, card) {
    const rankJob = RANK[job.state] ?? 0;
    const rankCard = RANK[card.dataset.state] ?? 0;
    if (rankJob !== rankCard) return rankJob > rankCard;
    return Number(job.seq || 0) > Number(card.dataset.seq || 0);
  }

  let lastSnapshot = Date.now();
  function render(job) {
    if (!job || typeof job.job !== "string" || !/^[0-9a-f]{16}$/.test(job.job)) return;
    lastSnapshot = Date.now();
    const existing = document.getElementById("pull-" + job.job);
    if (existing && !newer(job, existing)) return;
    const card = existing || newCard(job);
    card.dataset.state = job.state;
    card.dataset.seq = String(Number(job.seq || 0));
    const state = role(card, "state");
    state.textContent = job.state;
    state.className = "pill " + String(job.state).replace(/[^a-z]/g, "");
    role(card, "ref").textContent = job.ref || "";
    role(card, "platform").textContent = job.platform || "";
    // once the pull ends the step only repeats the state pill ("done" twice): show it while it runs
    const ended = job.state === "done" || job.state === "error";
    role(card, "step").textContent = ended ? "" : job.step || "";
    const error = role(card, "error");
    error.textContent = job.error || "";
    error.hidden = !job.error;
    const link = role(card, "image");
    if (job.image && /^sha256:[0-9a-f]{64}$/.test(job.image)) {
      link.href = pulls.dataset.imageUrl.replace(ZERO_ID, job.image.slice(7));
      link.hidden = false;
    }
    const list = role(card, "layers");
    for (const layer of job.layers || []) drawLayer(layerRow(list, layer), layer);
  }

  // Cards rendered by the server: draw their texts the same way the events will.
  for (const row of pulls.querySelectorAll(".pull-layer")) {
    drawLayer(row, {
      state: row.dataset.state, size: row.dataset.size, done: row.dataset.done,
      speed: Number(row.dataset.speed), digest: row.dataset.digest,
    });
  }

  document.body.addEventListener("gantry:pull", (e) => render(e.detail));

  // The card the server sent for a pull can be older than the events that arrived while the
  // request was in flight (or the pull was already running): keep the newest copy.
  function dedupe() {
    const byId = new Map();
    for (const card of Array.from(pulls.querySelectorAll(".pull-job"))) {
      const kept = byId.get(card.id);
      if (!kept) { byId.set(card.id, card); continue; }
      if (newer(card.dataset, kept)) { kept.replaceWith(card); byId.set(card.id, card); } else card.remove();
    }
  }
  pulls.addEventListener("htmx:afterSwap", dedupe);

  // Read every card again from the server; each replaces its copy here only if newer.
  let reading = false;
  async function reread() {
    if (reading || !pulls.dataset.pullsUrl) return;
    reading = true;
    try {
      const r = await fetch(pulls.dataset.pullsUrl, { credentials: "same-origin", headers: { "HX-Request": "true" } });
      if (!r.ok) return;
      const box = document.createElement("template");
      box.innerHTML = await r.text();
      for (const card of Array.from(box.content.querySelectorAll(".pull-job"))) {
        const mine = document.getElementById(card.id);
        if (mine && !newer(card.dataset, mine)) continue;
        for (const row of card.querySelectorAll(".pull-layer")) {
          drawLayer(row, { state: row.dataset.state, size: row.dataset.size, done: row.dataset.done, speed: Number(row.dataset.speed) });
        }
        if (mine) mine.replaceWith(card); else pulls.prepend(card);
      }
      lastSnapshot = Date.now();
    } catch (err) {
      // the server is away: the next resync tries again
    } finally {
      reading = false;
    }
  }
  document.body.addEventListener("gantry:resync", reread);
  const QUIET_MS = 3000;
  setInterval(() => {
    const running = pulls.querySelector('.pull-job[data-state="resolving"], .pull-job[data-state="pulling"]');
    if (running && Date.now() - lastSnapshot > QUIET_MS && document.visibilityState === "visible") reread();
  }, 1000);

  if (form && formError) {
    form.addEventListener("htmx:beforeRequest", () => { formError.hidden = true; formError.textContent = ""; });
    form.addEventListener("htmx:responseError", (e) => {
      formError.textContent = (e.detail.xhr.responseText || "the pull could not start").slice(0, 500);
      formError.hidden = false;
    });
    form.addEventListener("htmx:afterRequest", (e) => {
      if (e.detail.successful) form.querySelector("#pull-ref").value = "";
    });
  }
})();
