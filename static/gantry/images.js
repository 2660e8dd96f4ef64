// Gantry images page: live pull cards. The engine publishes a snapshot of each running pull
// (kind "pull") over /ws/events/; the server renders its card (webui/pullcards.py) into the
// message, and app.js re-dispatches it as a "gantry:pull" DOM event. Cards are only ever
// rendered by the server: this script keeps the newest copy of each and swaps it in.
// Snapshots carry a sequence number per pull: an older one than the card has, or one that
// would take an ended pull back to running, is dropped. While a pull runs and no snapshot
// came for a while (or on "gantry:resync"), the cards are read again from the server.
(function () {
  "use strict";

  const pulls = document.getElementById("pulls");
  if (!pulls) return;
  const form = document.getElementById("pull-form");
  const formError = document.getElementById("pull-error");

  // The server's HTML for one card, as an element (nothing runs: CSP, and no inline script).
  function cardOf(html) {
    const box = document.createElement("template");
    box.innerHTML = String(html || "");
    const card = box.content.firstElementChild;
    return card && card.classList.contains("pull-job") ? card : null;
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
  // Put a card in place of its older copy (or first, for a new pull), unless it is older.
  function place(card) {
    if (!card || !/^pull-[0-9a-f]{16}$/.test(card.id)) return;
    const mine = document.getElementById(card.id);
    if (mine && !newer(card.dataset, mine)) return;
    if (mine) mine.replaceWith(card); else pulls.prepend(card);
  }

  function render(job) {
    if (!job || typeof job.job !== "string") return;
    lastSnapshot = Date.now();
    place(cardOf(job.html));
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
      Array.from(box.content.querySelectorAll(".pull-job")).forEach(place);
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
