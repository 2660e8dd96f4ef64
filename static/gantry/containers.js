// Containers list: the row actions are plain POST forms (the table is hx-disable'd, it holds
// container-made text), and a stop can take its whole timeout (SIGKILL after 10 s). As soon as
// one is sent, its row says so ("Stopping…") and its buttons are disabled until the answer
// loads the page again. The live table is redrawn on engine events meanwhile: pending rows
// are marked again after each redraw.
(function () {
  "use strict";

  const pending = new Map();  // container id -> what is happening ("Stopping…")

  function mark(row, label) {
    row.classList.add("pending");
    row.setAttribute("aria-busy", "true");
    const status = row.querySelector('[data-role="status"]');
    if (status) {
      status.textContent = label;
      status.classList.add("busy");
    }
    row.querySelectorAll(".row-actions button").forEach((b) => { b.disabled = true; });
    row.querySelectorAll(".row-actions summary").forEach((s) => { s.setAttribute("aria-disabled", "true"); });
  }

  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-pending]");
    const row = form && form.closest("tr[data-container]");
    if (!row) return;
    if (row.classList.contains("pending")) { e.preventDefault(); return; }  // one at a time
    // disable after this task: the browser has already taken the form's data by then
    setTimeout(() => mark(row, form.dataset.pending), 0);
    pending.set(row.dataset.container, form.dataset.pending);
  });

  document.addEventListener("click", (e) => {
    const summary = e.target.closest(".row-actions summary[aria-disabled='true']");
    if (summary) e.preventDefault();
  });

  document.addEventListener("htmx:afterSwap", (e) => {
    if (!e.detail.target || e.detail.target.id !== "container-table") return;
    for (const [id, label] of pending) {
      const row = document.querySelector(`tr[data-container="${CSS.escape(id)}"]`);
      if (row) mark(row, label);
    }
  });

  // Back from the bfcache: the request is over, nothing is pending any more.
  window.addEventListener("pageshow", (e) => { if (e.persisted) location.reload(); });
})();
