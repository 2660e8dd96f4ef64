// Gantry: what every page does. One websocket (/ws/events/) carries engine heartbeats and
// state events; the header badge says "connecting…" until the first heartbeat, and when
// heartbeats stop it asks the web server (/engine/status) who is gone: the engine, or the
// server itself. Events are re-dispatched as DOM events ("gantry:event", "gantry:<kind>")
// that htmx elements listen to.
// Events are hints; state is read. "gantry:resync" tells live parts of a page to re-read
// what they show: after the socket reconnects (events may have been missed), after a part
// failed to load, when the tab becomes visible again, and every 20 s while it is visible.
(function () {
  "use strict";

  const OFFLINE_AFTER_MS = 3000;  // three missed heartbeats (the engine beats every second)
  const PROBE_PATIENCE_MS = 800;  // a server that answers slowly is waiting for the engine
  let lastBeat = null;   // no heartbeat seen yet: the badge stays "connecting…"
  let openedAt = 0;
  let probing = false;
  let socket = null;
  let retry = 500;
  let everOpened = false;
  const RESYNC_EVERY_MS = 20000;
  const RESYNC_AFTER_ERROR_MS = 3000;

  function badge(state, label, title) {
    const el = document.getElementById("engine-status");
    if (!el) return;
    el.dataset.state = state;
    el.querySelector(".label").textContent = label;
    el.title = title || label;
  }

  function nodeInfo(info, node) {
    const el = document.getElementById("node-info");
    if (!el || !info) return;
    el.textContent = `node ${node} · runc ${info.runc} · conmon ${info.conmon} · kernel ${info.kernel}`;
  }

  function onMessage(msg) {
    if (msg.type === "heartbeat") {
      lastBeat = Date.now();
      badge("online", "engine online", `engine on ${msg.node}`);
      nodeInfo(msg.info, msg.node);
      document.body.dataset.engine = "online";
      return;
    }
    if (msg.type === "event") {
      document.body.dispatchEvent(new CustomEvent("gantry:event", { detail: msg }));
      if (msg.kind) {
        document.body.dispatchEvent(new CustomEvent("gantry:" + msg.kind, { detail: msg }));
      }
      changes();
    }
  }

  // "gantry:changes": any state event, at most once every CHANGES_EVERY_MS (the first at once,
  // the last one of a burst too), for parts that show everyone's state (the Class page): a
  // class of thirty makes many events, and such a part need not re-read for each one.
  const CHANGES_EVERY_MS = 2000;
  let changesTimer = null;
  let changesPending = false;
  function changes() {
    if (changesTimer) {
      changesPending = true;
      return;
    }
    document.body.dispatchEvent(new CustomEvent("gantry:changes"));
    changesTimer = setTimeout(() => {
      changesTimer = null;
      if (changesPending) {
        changesPending = false;
        changes();
      }
    }, CHANGES_EVERY_MS);
  }

  function connect() {
    const path = document.body.dataset.wsEvents;
    if (!path) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    socket = new WebSocket(url);
    socket.onopen = () => {
      retry = 500;
      openedAt = Date.now();
      if (everOpened) resync();  // what happened while the socket was down was not heard
      everOpened = true;
    };
    socket.onmessage = (e) => {
      try { onMessage(JSON.parse(e.data)); } catch (err) { console.warn("bad event", err); }
    };
    socket.onclose = (e) => {
      socket = null;
      if (e.code === 4401) { location.href = "/login/?next=" + encodeURIComponent(location.pathname); return; }
      if (e.code === 4000) badge("connecting", "reconnecting…", "reconnecting to the web server…");
      else badge("offline", "web disconnected", "reconnecting to the web server…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  // No heartbeat for a while (or none since the socket opened): the socket alone cannot say
  // whether the engine stopped or this browser lost the web server, so ask the server.
  async function probe() {
    probing = true;
    const url = document.getElementById("engine-status")?.dataset.statusUrl || "/engine/status";
    let text = null;
    let status = 0;
    // The server asks the engine (2 s timeout) before it answers: if it has not answered by
    // now it is there and the engine is not, which the badge says at once (within 5 s of the
    // engine stopping); the answer corrects it if need be.
    const slow = setTimeout(() => {
      if (lastBeat === null || Date.now() - lastBeat > OFFLINE_AFTER_MS) {
        badge("offline", "engine offline", "the web server gets no answer from the engine worker");
        document.body.dataset.engine = "offline";
      }
    }, PROBE_PATIENCE_MS);
    try {
      const r = await fetch(url, { cache: "no-store", credentials: "same-origin", redirect: "manual" });
      status = r.type === "opaqueredirect" ? 302 : r.status;
      if (r.ok) text = await r.text();
    } catch (err) {
      text = null;
    } finally {
      clearTimeout(slow);
      probing = false;
    }
    if (lastBeat !== null && Date.now() - lastBeat <= OFFLINE_AFTER_MS) return;  // a beat came meanwhile
    if (status === 0 && text === null) {
      badge("offline", "no contact with the server", "the browser cannot reach the web server");
      document.body.dataset.engine = "unknown";
    } else if (text === null) {
      badge("offline", "web server error", `the web server answered ${status || "a redirect"}`);
      document.body.dataset.engine = "unknown";
    } else if (text.includes('data-state="online"')) {
      // the engine answers but its heartbeats do not reach this socket: open a new one
      if (socket) socket.close(4000, "no heartbeats");
    } else {
      badge("offline", "engine offline", "the web server gets no answer from the engine worker");
      document.body.dataset.engine = "offline";
    }
  }

  setInterval(() => {
    if (probing || !socket || socket.readyState !== WebSocket.OPEN) return;
    // A socket just (re)opened gets its own three seconds: measured from the last beat seen
    // on an earlier socket, a new one was closed again before the engine's first beat reached
    // it, forever (the engine answers requests a moment before its heartbeats start).
    if (Date.now() - Math.max(lastBeat ?? 0, openedAt) > OFFLINE_AFTER_MS) probe();
  }, 500);

  function resync() { document.body.dispatchEvent(new CustomEvent("gantry:resync")); }
  let resyncTimer = null;
  function resyncSoon() {
    if (resyncTimer) return;
    resyncTimer = setTimeout(() => { resyncTimer = null; resync(); }, RESYNC_AFTER_ERROR_MS);
  }
  setInterval(() => { if (document.visibilityState === "visible") resync(); }, RESYNC_EVERY_MS);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") resync();
  });
  function listensForResync(elt) {
    return Boolean(elt && elt.getAttribute && (elt.getAttribute("hx-trigger") || "").includes("gantry:resync"));
  }
  // A live part that failed, or that loaded with an error in it (data-resync-soon), tries again.
  document.addEventListener("htmx:responseError", (e) => { if (listensForResync(e.detail.elt)) resyncSoon(); });
  document.addEventListener("htmx:sendError", (e) => { if (listensForResync(e.detail.elt)) resyncSoon(); });
  document.addEventListener("htmx:afterSwap", (e) => {
    const t = e.detail.target;
    if (t && t.isConnected && t.querySelector && t.querySelector("[data-resync-soon]")) resyncSoon();
  });

  // A refresh (a GET) that lands between mousedown and mouseup on a button replaces the button
  // and the click is lost. While a pointer is pressed inside a part, its refresh waits until
  // the click has been dispatched, then is asked again.
  let pressed = null;
  const held = new Map();  // element -> path of the refresh it was not given
  document.addEventListener("pointerdown", (e) => { pressed = e.target; }, true);
  function release() {
    if (!pressed) return;
    setTimeout(() => {  // after this press's click (and the request it issues)
      pressed = null;
      for (const [elt, path] of held) {
        if (elt.isConnected && window.htmx) window.htmx.ajax("GET", path, { source: elt });
      }
      held.clear();
    }, 0);
  }
  document.addEventListener("pointerup", release, true);
  document.addEventListener("pointercancel", release, true);
  // a press may never see its pointerup (a context menu, a drag, the window left meanwhile)
  for (const name of ["contextmenu", "dragstart", "blur", "visibilitychange"]) {
    window.addEventListener(name, release, true);
  }
  document.addEventListener("pointerdown", () => setTimeout(release, 3000), true);
  document.addEventListener("htmx:beforeSwap", (e) => {
    const target = e.detail.target;
    const config = e.detail.requestConfig || {};
    if (!pressed || !target || config.verb !== "get" || !target.contains(pressed)) return;
    e.detail.shouldSwap = false;
    held.set(e.detail.elt, config.path);
  });

  // Errors from htmx requests: the server sends one clear sentence; show it.
  function toast(text, kind) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const t = document.createElement("div");
    t.className = "toast " + (kind || "error");
    t.setAttribute("role", "alert");
    t.textContent = text;
    box.appendChild(t);
    setTimeout(() => t.remove(), 8000);
  }
  window.gantryToast = toast;

  document.addEventListener("htmx:responseError", (e) => {
    const xhr = e.detail.xhr;
    const target = e.detail.target;
    if (target && target.dataset && target.dataset.errorsInline) return;
    let text = xhr.responseText || xhr.statusText;
    if (xhr.getResponseHeader("Content-Type")?.startsWith("text/html")) {
      const div = document.createElement("div");
      div.innerHTML = text;
      text = div.textContent.trim();
    }
    toast(text.slice(0, 500) || `request failed (${xhr.status})`);
  });
  document.addEventListener("htmx:sendError", () => toast("the web server is unreachable"));

  // Copy buttons: <button data-copy="#id"> or data-copy-text="...".
  document.addEventListener("click", (e) => {
    const btn = e.target.closest("[data-copy], [data-copy-text]");
    if (!btn) return;
    const text = btn.dataset.copyText ?? document.querySelector(btn.dataset.copy)?.textContent ?? "";
    navigator.clipboard?.writeText(text).then(() => {
      const old = btn.textContent; btn.textContent = "Copied"; setTimeout(() => { btn.textContent = old; }, 1200);
    });
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", connect);
  else connect();
})();
