// Gantry: what every page does. One websocket (/ws/events/) carries engine heartbeats and
// state events; the header badge says "engine offline" when heartbeats stop, and events are
// re-dispatched as DOM events ("gantry:event", "gantry:<kind>") that htmx elements listen to.
(function () {
  "use strict";

  const OFFLINE_AFTER_MS = 3500;
  let lastBeat = 0;
  let socket = null;
  let retry = 500;

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
    }
  }

  function connect() {
    const path = document.body.dataset.wsEvents;
    if (!path) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    socket = new WebSocket(url);
    socket.onopen = () => { retry = 500; };
    socket.onmessage = (e) => {
      try { onMessage(JSON.parse(e.data)); } catch (err) { console.warn("bad event", err); }
    };
    socket.onclose = (e) => {
      socket = null;
      if (e.code === 4401) { location.href = "/login/?next=" + encodeURIComponent(location.pathname); return; }
      badge("offline", "web disconnected", "reconnecting to the web server…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  setInterval(() => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastBeat > OFFLINE_AFTER_MS) {
      badge("offline", "engine offline", "no heartbeat from the engine worker");
      document.body.dataset.engine = "offline";
    }
  }, 500);

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

  // Confirmations without inline script: <button data-confirm="Remove it?">.
  document.addEventListener("htmx:confirm", (e) => {
    const q = e.detail.elt.dataset.confirm;
    if (!q) return;
    e.preventDefault();
    if (window.confirm(q)) e.detail.issueRequest(true);
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", connect);
  else connect();
})();
