// Gantry terminals: xterm.js panes attached to a container's console or to exec shells,
// over /ws/containers/<id>/terminal/ and /ws/containers/<id>/exec/<exec>/.
//
// Binary frames carry pty bytes both ways; text frames carry JSON control. The pane is fitted
// to its box and every size change is sent as {"type":"resize"}. A pane reconnects by itself
// after a network blip or an engine restart (the engine replays the recent scrollback).
// Output is hostile: sequences that would write the clipboard (OSC 52), answer back with
// content chosen by the container (DECRQSS, colour and title reports) or open links (OSC 8)
// are swallowed before xterm.js acts on them, so nothing of the container's choosing is ever
// sent back as input.
(function () {
  "use strict";

  const root = document.getElementById("terminals");
  if (!root || typeof Terminal === "undefined") return;
  const containerId = root.dataset.container;
  const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  const tabsEl = root.querySelector("[data-term-tabs]");
  const panesEl = root.querySelector("[data-term-panes]");
  const panes = new Map();

  function harden(term) {
    const swallow = () => true;
    term.parser.registerDcsHandler({ intermediates: "$", final: "q" }, swallow); // DECRQSS
    term.parser.registerDcsHandler({ intermediates: "+", final: "q" }, swallow); // XTGETTCAP
    for (const code of [4, 10, 11, 12, 52, 104, 110, 111, 112]) {
      term.parser.registerOscHandler(code, swallow); // palette/colour queries, clipboard
    }
    term.parser.registerOscHandler(8, swallow); // hyperlinks
    term.parser.registerCsiHandler({ final: "t" }, (params) => params[0] >= 14); // window reports
  }

  function makePane(key, label, path, closable) {
    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "term-tab";
    tab.setAttribute("role", "tab");
    tab.dataset.key = key;
    tab.innerHTML = '<span class="term-dot" aria-hidden="true"></span><span class="term-label"></span>';
    tab.querySelector(".term-label").textContent = label;
    tabsEl.insertBefore(tab, tabsEl.querySelector("[data-term-new]"));

    const box = document.createElement("div");
    box.className = "term-pane";
    box.setAttribute("role", "tabpanel");
    box.hidden = true;
    const status = document.createElement("div");
    status.className = "term-status";
    status.setAttribute("aria-live", "polite");
    const screen = document.createElement("div");
    screen.className = "term-screen";
    box.append(status, screen);
    panesEl.appendChild(box);

    const term = new Terminal({
      cursorBlink: true, convertEol: false, scrollback: 5000, allowProposedApi: false,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace', fontSize: 14,
      theme: { background: "#0f1720", foreground: "#e6edf3" },
    });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    harden(term);
    term.open(screen);

    const pane = { key, tab, box, term, fit, status, path, ws: null, ended: false, retry: 500 };
    panes.set(key, pane);
    tab.addEventListener("click", () => select(key));

    // Copy and paste as terminals do: Ctrl+Shift+C copies the selection (and does not open the
    // browser's inspector); Ctrl+Shift+V is left to the browser, whose paste event xterm.js
    // turns into input once (reading the clipboard here as well pasted twice). Plain Ctrl+C
    // stays ^C for the program.
    term.attachCustomKeyEventHandler((e) => {
      if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey) return true;
      if (e.code === "KeyC") {
        e.preventDefault();
        if (term.hasSelection()) navigator.clipboard?.writeText(term.getSelection());
        return false;
      }
      return e.code !== "KeyV";
    });
    const encoder = new TextEncoder();
    term.onData((d) => send(pane, encoder.encode(d)));
    term.onBinary((d) => send(pane, Uint8Array.from(d, (c) => c.charCodeAt(0))));
    new ResizeObserver(() => resize(pane)).observe(screen);
    connect(pane);
    return pane;
  }

  function send(pane, bytes) {
    if (pane.ws && pane.ws.readyState === WebSocket.OPEN && bytes.length) pane.ws.send(bytes);
  }

  function resize(pane) {
    if (pane.box.hidden) return;
    try { pane.fit.fit(); } catch (e) { return; }
    const { rows, cols } = pane.term;
    if (pane.ws && pane.ws.readyState === WebSocket.OPEN && rows > 0 && cols > 0) {
      pane.ws.send(JSON.stringify({ type: "resize", rows, cols }));
    }
  }

  function setStatus(pane, state, text) {
    pane.tab.dataset.state = state;
    pane.status.textContent = text;
    pane.status.dataset.state = state;
  }

  function connect(pane) {
    setStatus(pane, "connecting", "connecting…");
    const ws = new WebSocket(wsBase + pane.path);
    ws.binaryType = "arraybuffer";
    pane.ws = ws;
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") {
        pane.term.write(new Uint8Array(e.data));
        return;
      }
      const msg = JSON.parse(e.data);
      if (msg.type === "attached") {
        pane.retry = 500;
        pane.term.reset(); // the engine replays the recent screen after every attach
        setStatus(pane, "attached", "attached");
        resize(pane);
        if (!pane.box.hidden) pane.term.focus();
      } else if (msg.type === "exit") {
        pane.ended = true;
        const code = msg.code === null || msg.code === undefined ? "" : ` with code ${msg.code}`;
        setStatus(pane, "exited", `${msg.reason || "ended"}${code}`);
        pane.tab.querySelector(".term-label").textContent += msg.code !== null && msg.code !== undefined ? ` (exit ${msg.code})` : " (ended)";
      } else if (msg.type === "error") {
        pane.ended = !/offline/.test(msg.message);
        setStatus(pane, "error", msg.message);
      }
    };
    ws.onclose = (e) => {
      pane.ws = null;
      if (pane.ended || e.code === 4403 || e.code === 4404) {
        if (!pane.ended) setStatus(pane, "error", e.code === 4403 ? "not allowed" : "not found");
        return;
      }
      if (e.code === 4401) { location.href = "/login/?next=" + encodeURIComponent(location.pathname); return; }
      setStatus(pane, "reconnecting", `disconnected${e.reason ? ": " + e.reason : ""} — reconnecting…`);
      setTimeout(() => { if (!pane.ended) connect(pane); }, pane.retry);
      pane.retry = Math.min(pane.retry * 2, 5000);
    };
  }

  function select(key) {
    for (const [k, p] of panes) {
      const on = k === key;
      p.box.hidden = !on;
      p.tab.setAttribute("aria-selected", on ? "true" : "false");
      if (on) { resize(p); p.term.focus(); }
    }
  }

  // The container's own console (tty containers only).
  if (root.dataset.tty === "true" && root.dataset.running === "true") {
    makePane("console", "Console", `/ws/containers/${containerId}/terminal/`, false);
    select("console");
  }

  // Exec shells: the form posts (htmx) to create an exec session; the response tells us its id.
  document.body.addEventListener("gantry:exec-created", (e) => {
    const { exec, label } = e.detail;
    if (!/^[0-9a-f]{16,64}$/.test(exec)) return;
    makePane("exec-" + exec, label || "shell", `/ws/containers/${containerId}/exec/${exec}/`, true);
    select("exec-" + exec);
  });
  for (const el of root.querySelectorAll("[data-exec-open]")) {
    el.dispatchEvent(new CustomEvent("gantry:exec-created", { bubbles: true, detail: { exec: el.dataset.execOpen, label: el.dataset.label } }));
  }
  window.gantryTerminals = panes; // for tests and the lab page
})();
