// Files tab: the upload's progress bar (htmx's progress events), and keeping the listing
// fresh after actions. No inline script anywhere (CSP script-src 'self').
(function () {
  "use strict";

  // Uploads go through htmx (hx-post with hx-encoding="multipart/form-data"); its
  // htmx:xhr:progress events drive the bar, and the server's answer fills #upload-status.
  function uploadForm(e) {
    const form = e.detail && e.detail.elt;
    return form && form.id === "upload-form" ? form : null;
  }

  document.body.addEventListener("htmx:beforeRequest", (e) => {
    const form = uploadForm(e);
    if (!form) return;
    const bar = form.querySelector("progress");
    bar.hidden = false;
    bar.value = 0;
    form.querySelector("#upload-status").textContent =
      "uploading " + form.querySelector("input[type=file]").files.length + " file(s)…";
  });

  document.body.addEventListener("htmx:xhr:progress", (e) => {
    const form = uploadForm(e);
    if (!form || !e.detail.lengthComputable) return;
    const pct = Math.round((e.detail.loaded / e.detail.total) * 100);
    form.querySelector("progress").value = pct;
    form.querySelector("#upload-status").textContent = pct < 100 ? "sent " + pct + "%" : "saving in the container…";
  });

  document.body.addEventListener("htmx:afterRequest", (e) => {
    const form = uploadForm(e);
    if (!form) return;
    form.querySelector("progress").hidden = true;
    if (e.detail.successful) form.querySelector("input[type=file]").value = "";
    else form.querySelector("#upload-status").textContent = "";
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
      form.setAttribute("hx-confirm", "Delete " + d.name + (d.type === "dir" ? " and everything in it" : "") + "?");
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
