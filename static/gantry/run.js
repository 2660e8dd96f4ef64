// Run tab: live state and logs of one container.
// - The state panel (#run-state) is re-fetched (htmx "refresh") when an engine event for this
//   container arrives over /ws/events/ (app.js re-dispatches them as "gantry:container").
// - The logs panel asks /run/logs for the tail, then, while "Follow" is on, for what was
//   appended after its cursor: every second, and at once on an event for this container.
//   Container output is hostile: it only ever goes in through textContent.
(function () {
  "use strict";

  const root = document.getElementById("run-tab");
  if (!root) return;
  const id = root.dataset.container;
  const logsUrl = root.dataset.logsUrl;
  const pre = document.getElementById("run-logs");
  const follow = document.getElementById("logs-follow");
  const stamps = document.getElementById("logs-timestamps");
  const download = document.getElementById("logs-download");
  const note = document.getElementById("logs-note");
  const MAX_CHARS = 2 * 1024 * 1024;
  const FOLLOW_MS = 1000;
  let cursor = "";
  let generation = 0;
  let busy = false;
  let timer = null;

  // Events come in bursts (died, then remove for a forced remove): refresh once, a moment
  // later, and not at all when the container is being removed.
  let refreshTimer = null;
  let removed = false;
  function refreshState() {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      const panel = document.getElementById("run-state");
      if (panel && window.htmx && !removed) window.htmx.trigger(panel, "refresh");
    }, 150);
  }

  function atBottom() {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  }

  // A tty's log is what the terminal got: CSI/OSC sequences and \r redraws. The panel is
  // plain text, so drop the sequences and end lines at \r; the download keeps every byte.
  const CSI = /\x1b\[[0-?]*[ -\/]*[@-~]/g;
  const OSC = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;
  function plain(text) {
    return text.replace(OSC, "").replace(CSI, "").replace(/\r\n/g, "\n").replace(/\r/g, "\n");
  }

  function append(raw) {
    if (!raw) return;
    const text = plain(raw);
    const stick = atBottom();
    let all = pre.textContent + text;
    if (all.length > MAX_CHARS) {
      all = all.slice(all.length - MAX_CHARS);
      note.textContent = "older output trimmed here; download for all of it";
    }
    pre.textContent = all;
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  async function fetchLogs() {
    if (busy) return;
    busy = true;
    const mine = generation;
    try {
      const params = new URLSearchParams();
      if (cursor) params.set("cursor", cursor);
      if (stamps.checked) params.set("timestamps", "1");
      let more = true;
      while (more && mine === generation) {
        const r = await fetch(logsUrl + "?" + params.toString(), {
          headers: { "Accept": "application/json" }, credentials: "same-origin",
        });
        if (!r.ok) {
          note.textContent = (await r.text()).slice(0, 200) || "logs unavailable";
          return;
        }
        const data = await r.json();
        if (mine !== generation) return;
        if (data.truncated && cursor) append("\n[log truncated by conmon at its size limit]\n");
        append(data.data);
        cursor = data.cursor;
        params.set("cursor", cursor);
        more = Boolean(data.more) && data.data.length > 0;
        if (!note.textContent.startsWith("older")) note.textContent = "";
      }
    } catch (err) {
      note.textContent = "logs: " + err;
    } finally {
      busy = false;
    }
  }

  function reload() {
    generation += 1;
    cursor = "";
    busy = false;
    pre.textContent = "";
    note.textContent = "";
    download.href = download.dataset.base + (stamps.checked ? "?timestamps=1" : "");
    fetchLogs();
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = null;
    if (follow.checked) {
      timer = setInterval(() => { if (!document.hidden) fetchLogs(); }, FOLLOW_MS);
    }
  }

  document.body.addEventListener("gantry:container", (e) => {
    const ev = e.detail || {};
    if (ev.container !== id) return;
    if (ev.action === "remove") {
      if (refreshTimer) clearTimeout(refreshTimer);
      // Removed elsewhere: leave. Removed from this page: its response redirects (a second
      // navigation here would abort that one).
      if (!removed) location.href = "/containers/";
      removed = true;
      return;
    }
    refreshState();
    if (follow.checked) fetchLogs();
  });

  // The periodic state refresh must not toast every 15 s while the engine is away.
  root.addEventListener("htmx:responseError", (e) => {
    if (!e.detail.elt || e.detail.elt.id !== "run-state") return;
    e.stopPropagation();
    // gone: leave, unless this page removed it (its own answer redirects; a second
    // navigation would abort that one)
    if (e.detail.xhr && e.detail.xhr.status === 404 && !removed) location.href = "/containers/";
  });
  root.addEventListener("htmx:sendError", (e) => {
    if (e.detail.elt && e.detail.elt.id === "run-state") e.stopPropagation();
  });
  // A remove from this page: no more state refreshes (the container is about to vanish).
  root.addEventListener("htmx:beforeRequest", (e) => {
    const path = (e.detail.requestConfig && e.detail.requestConfig.path) || "";
    if (path.endsWith("/remove")) removed = true;
    // no state refresh (periodic, resync) of a container being removed
    else if (removed && e.detail.elt && e.detail.elt.id === "run-state") e.preventDefault();
  });
  root.addEventListener("htmx:afterRequest", (e) => {
    const path = (e.detail.requestConfig && e.detail.requestConfig.path) || "";
    if (path.endsWith("/remove") && !e.detail.successful) removed = false;
  });
  // After an action the logs may have grown (a start writes output at once); the page
  // header's state pill (rendered once with the page) follows the panel.
  function syncHeader() {
    const panel = document.getElementById("run-state");
    const pill = document.getElementById("container-state");
    if (!panel || !pill || !panel.dataset.state) return;
    pill.textContent = panel.dataset.state;
    pill.className = "pill " + panel.dataset.state;
  }
  document.body.addEventListener("htmx:afterSettle", (e) => {
    syncHeader();
    if (e.detail.target && e.detail.target.id === "run-state") fetchLogs();
  });

  follow.addEventListener("change", () => { schedule(); if (follow.checked) fetchLogs(); });
  stamps.addEventListener("change", reload);
  syncHeader();
  reload();
  schedule();
})();
