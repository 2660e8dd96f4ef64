// Files tab: multi-file upload with a progress bar (XHR upload progress events), and keeping
// the listing fresh after actions. No inline script anywhere (CSP script-src 'self').
(function () {
  "use strict";

  function csrfToken(form) {
    const field = form.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function changed() {
    document.body.dispatchEvent(new CustomEvent("gantry:files-changed", { detail: {} }));
  }

  function upload(form) {
    const input = form.querySelector("input[type=file]");
    const bar = form.querySelector("progress");
    const status = form.querySelector("#upload-status");
    if (!input || !input.files.length) return;
    const data = new FormData(form);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "uploading " + input.files.length + " file(s)…";
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.round((e.loaded / e.total) * 100);
      bar.value = pct;
      status.textContent = pct < 100 ? "sent " + pct + "%" : "saving in the container…";
    });
    xhr.addEventListener("load", () => {
      bar.hidden = true;
      let result = null;
      try { result = JSON.parse(xhr.responseText); } catch (err) { result = null; }
      if (!result) {
        status.textContent = "";
        if (window.gantryToast) window.gantryToast(xhr.responseText.slice(0, 300) || "upload failed (" + xhr.status + ")");
        return;
      }
      const ok = result.files.filter((f) => f.ok).length;
      const failed = result.files.filter((f) => !f.ok);
      status.textContent = ok + " uploaded" + (failed.length ? ", " + failed.length + " failed" : "");
      failed.forEach((f) => window.gantryToast && window.gantryToast(f.name + ": " + f.error));
      input.value = "";
      changed();
    });
    xhr.addEventListener("error", () => {
      bar.hidden = true;
      status.textContent = "";
      if (window.gantryToast) window.gantryToast("upload failed: the web server is unreachable");
    });
    xhr.send(data);
  }

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form && form.id === "upload-form") {
      e.preventDefault();
      upload(form);
    }
  });

  // After an htmx action in the listing: close its menu and clear the toolbar inputs.
  document.body.addEventListener("gantry:files-changed", () => {
    
    ["touch-name", "mkdir-name"].forEach((id) => {
      const el = document.getElementById(id);
      if (el) el.value = "";
    });
  });
})();

// One actions dialog for every row (rename, chmod, delete, download), filled from the row's
// data attributes, so a page of hundreds of rows stays small and quick to render.
(function () {
  "use strict";
  const dialog = document.getElementById("row-actions");
  if (!dialog) return;
  const files = document.getElementById("files");

  document.addEventListener("click", (e) => {
    const btn = e.target.closest && e.target.closest("button.row-menu");
    if (btn) {
      const d = btn.dataset;
      dialog.querySelectorAll("input.row-path").forEach((input) => { input.value = d.path; });
      document.getElementById("row-actions-name").textContent = d.name;
      document.getElementById("row-rename").value = d.name;
      document.getElementById("row-mode").value = d.perm;
      const form = document.getElementById("row-delete-form");
      form.dataset.confirm = "Delete " + d.name + (d.type === "dir" ? " and everything in it" : "") + "?";
      const dl = document.getElementById("row-download");
      dl.hidden = !(d.type === "file" || d.type === "dir");
      dl.textContent = d.type === "dir" ? "Download (tar)" : "Download";
      dl.href = files.dataset.download + "?path=" + d.path;
      dialog.showModal();
      return;
    }
    if (e.target.id === "row-actions-close") dialog.close();
  });

  document.body.addEventListener("gantry:files-changed", () => { if (dialog.open) dialog.close(); });
})();
