// The Spec tab: one document, two editors. The raw JSON (#spec-text) is the truth and the
// only thing Save posts; the form for the common fields rewrites it on every change, and
// follows it when the user types JSON (once it parses). Errors from Save/Check arrive as a
// list of field paths (#spec-error-list) and are shown next to the matching form field.
(function () {
  "use strict";

  const text = document.getElementById("spec-text");
  const editor = document.getElementById("spec-editor");
  if (!text || !editor) return;
  const broken = document.getElementById("spec-json-broken");
  const rows = document.getElementById("spec-mount-rows");
  const template = document.getElementById("spec-mount-template");
  const metaEl = document.getElementById("spec-meta");
  const meta = metaEl ? JSON.parse(metaEl.textContent) : { engineMounts: [] };
  const BIG = "__gantry_bigint__:";

  // -- lossless JSON: integers beyond 2^53 (uint64 rlimits) survive the round trip ---------
  function protectBigInts(src) {
    let out = "", i = 0, inString = false;
    while (i < src.length) {
      const ch = src[i];
      if (inString) {
        out += ch;
        if (ch === "\\") { out += src[i + 1] || ""; i += 2; continue; }
        if (ch === '"') inString = false;
        i += 1;
        continue;
      }
      if (ch === '"') { inString = true; out += ch; i += 1; continue; }
      const m = /^-?\d{16,}(?![.eE\d])/.exec(src.slice(i, i + 40));
      if (m && !/[\w.]/.test(src[i - 1] || "")) {
        out += '"' + BIG + m[0] + '"';
        i += m[0].length;
        continue;
      }
      out += ch;
      i += 1;
    }
    return out;
  }
  function parseDoc(src) {
    const doc = JSON.parse(protectBigInts(src));
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("not an object");
    return doc;
  }
  function dump(doc) {
    const json = JSON.stringify(doc, null, 2);
    return json.replace(new RegExp('"' + BIG + '(-?\\d+)"', "g"), "$1") + "\n";
  }

  // -- paths -------------------------------------------------------------------------------
  function getPath(doc, path) {
    return path.split(".").reduce((v, k) => (v && typeof v === "object" ? v[k] : undefined), doc);
  }
  function setPath(doc, path, value) {
    const keys = path.split(".");
    let v = doc;
    for (const k of keys.slice(0, -1)) {
      if (!v[k] || typeof v[k] !== "object" || Array.isArray(v[k])) v[k] = {};
      v = v[k];
    }
    v[keys[keys.length - 1]] = value;
  }
  function deletePath(doc, path) {
    const keys = path.split(".");
    const parents = [doc];
    for (const k of keys.slice(0, -1)) {
      const next = parents[parents.length - 1][k];
      if (!next || typeof next !== "object") return;
      parents.push(next);
    }
    delete parents[parents.length - 1][keys[keys.length - 1]];
    // Drop objects left empty (linux.resources.memory when its limit goes).
    for (let i = parents.length - 1; i > 0; i -= 1) {
      if (Object.keys(parents[i]).length) break;
      delete parents[i - 1][keys[i - 1]];
    }
  }

  // -- form -> document ----------------------------------------------------------------------
  function readField(el, doc) {
    const path = el.dataset.field, kind = el.dataset.kind || "text";
    if (kind === "lines") {
      setPath(doc, path, el.value.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l !== ""));
    } else if (kind === "bool") {
      setPath(doc, path, el.checked);
    } else if (kind === "int") {
      const raw = el.value.trim();
      if (raw === "") deletePath(doc, path);
      else if (/^-?\d+$/.test(raw)) setPath(doc, path, Number.isSafeInteger(+raw) ? +raw : BIG + raw);
    } else if (kind === "cpus") {
      const raw = el.value.trim();
      if (raw === "") { deletePath(doc, "linux.resources.cpu.quota"); deletePath(doc, "linux.resources.cpu.period"); }
      else if (!Number.isNaN(+raw)) {
        const period = getPath(doc, "linux.resources.cpu.period") || 100000;
        setPath(doc, "linux.resources.cpu.period", period);
        setPath(doc, "linux.resources.cpu.quota", Math.round(+raw * period));
      }
    } else {
      setPath(doc, path, el.value);
    }
  }

  function readCaps(doc) {
    const checked = [...editor.querySelectorAll("input[data-cap]")].filter((c) => c.checked).map((c) => c.dataset.cap);
    const caps = getPath(doc, "process.capabilities") || {};
    // Keep the document's order (a toggle back and forth leaves no diff); new ones go last.
    const before = Array.isArray(caps.bounding) ? caps.bounding : [];
    const chosen = before.filter((c) => checked.includes(c)).concat(checked.filter((c) => !before.includes(c)));
    caps.bounding = chosen;
    for (const set of ["effective", "permitted"]) if (Array.isArray(caps[set])) caps[set] = chosen.slice();
    for (const set of ["inheritable", "ambient"]) if (Array.isArray(caps[set])) caps[set] = caps[set].filter((c) => chosen.includes(c));
    setPath(doc, "process.capabilities", caps);
  }

  function readMounts(doc) {
    const old = Array.isArray(doc.mounts) ? doc.mounts : [];
    const next = [];
    for (const tr of rows.querySelectorAll("tr")) {
      const idx = tr.dataset.index;
      const base = idx !== undefined && old[+idx] ? Object.assign({}, old[+idx]) : {};
      if (!tr.classList.contains("engine")) {
        const part = (name) => tr.querySelector(`[data-part="${name}"]`).value.trim();
        base.destination = part("destination");
        if (part("type")) base.type = part("type"); else delete base.type;
        if (part("source")) base.source = part("source"); else delete base.source;
        base.options = part("options").split(",").map((o) => o.trim()).filter(Boolean);
      }
      next.push(base);
    }
    doc.mounts = next;
    renumberRows();
  }

  function renumberRows() {
    [...rows.querySelectorAll("tr")].forEach((tr, i) => {
      tr.dataset.index = String(i);
      tr.dataset.field = `mounts[${i}]`;
    });
  }

  function formChanged(target) {
    let doc;
    try { doc = parseDoc(text.value); } catch (e) { showBroken(true); return; }
    if (target && target.dataset.cap) readCaps(doc);
    else if (target && target.closest("#spec-mount-rows")) readMounts(doc);
    else if (target && target.dataset.field) readField(target, doc);
    text.value = dump(doc);
  }

  // -- document -> form ----------------------------------------------------------------------
  function showBroken(on) { if (broken) broken.hidden = !on; }

  function fillForm(doc) {
    for (const el of editor.querySelectorAll("[data-field][data-kind], input[data-field]:not([data-kind])")) {
      if (el === document.activeElement || el.closest("#spec-mount-rows")) continue;
      const kind = el.dataset.kind || "text", value = getPath(doc, el.dataset.field);
      const plain = (v) => (typeof v === "string" && v.startsWith(BIG) ? v.slice(BIG.length) : v);
      if (kind === "lines") el.value = Array.isArray(value) ? value.map(String).join("\n") : "";
      else if (kind === "bool") el.checked = value === true;
      else if (kind === "cpus") {
        const quota = getPath(doc, "linux.resources.cpu.quota"), period = getPath(doc, "linux.resources.cpu.period") || 100000;
        el.value = typeof quota === "number" && quota > 0 ? String(Math.round((quota / period) * 1000) / 1000) : "";
      } else el.value = value === undefined || value === null ? "" : String(plain(value));
    }
    const bounding = getPath(doc, "process.capabilities.bounding") || [];
    for (const c of editor.querySelectorAll("input[data-cap]")) c.checked = bounding.includes(c.dataset.cap);
    if (!rows.contains(document.activeElement)) buildRows(Array.isArray(doc.mounts) ? doc.mounts : []);
  }

  function buildRows(mounts) {
    rows.replaceChildren();
    mounts.forEach((m) => {
      const tr = template.content.firstElementChild.cloneNode(true);
      const engine = meta.engineMounts.includes(m.destination);
      const set = (name, value) => { const el = tr.querySelector(`[data-part="${name}"]`); el.value = value || ""; el.readOnly = engine; };
      set("destination", m.destination);
      set("source", m.source);
      set("type", m.type);
      set("options", (m.options || []).join(","));
      if (engine) {
        tr.classList.add("engine");
        tr.title = "a default mount: the engine generates it";
        const pill = document.createElement("span");
        pill.className = "pill";
        pill.textContent = "default";
        tr.lastElementChild.replaceChildren(pill);
      }
      rows.appendChild(tr);
    });
    renumberRows();
  }

  let timer = null;
  text.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      try { fillForm(parseDoc(text.value)); showBroken(false); } catch (e) { showBroken(true); }
    }, 250);
  });

  editor.addEventListener("input", (e) => {
    if (e.target === text || e.target.id === "spec-text") return;
    if (e.target.matches("[data-field], [data-cap], #spec-mount-rows input")) formChanged(e.target);
  });
  editor.addEventListener("change", (e) => {
    if (e.target.type === "checkbox") formChanged(e.target);
  });
  editor.addEventListener("click", (e) => {
    const remove = e.target.closest("[data-remove-mount]");
    if (remove) {
      remove.closest("tr").remove();
      formChanged(rows);
    }
  });
  const add = document.getElementById("spec-add-mount");
  if (add) add.addEventListener("click", () => {
    const tr = template.content.firstElementChild.cloneNode(true);
    rows.appendChild(tr);
    formChanged(tr.querySelector("input"));
    tr.querySelector("input").focus();
  });

  // Ctrl/Cmd+S saves (the form's own submit, so htmx handles it).
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") {
      const form = document.getElementById("spec-form");
      if (form) { e.preventDefault(); form.requestSubmit(); }
    }
  });

  // -- errors next to their fields -------------------------------------------------------------
  function targetFor(field) {
    const mount = /^mounts\[(\d+)\](?:\.(\w+))?/.exec(field);
    if (mount) {
      const tr = rows.querySelector(`tr[data-index="${mount[1]}"]`);
      if (tr) return (mount[2] && tr.querySelector(`[data-part="${mount[2]}"]`)) || tr.querySelector("input");
    }
    let path = field.replace(/\[\d+\]/g, "");
    while (path) {
      const el = editor.querySelector(`[data-field="${CSS.escape(path)}"]`);
      if (el) return el;
      path = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
    }
    return text;
  }

  function markErrors() {
    for (const old of editor.querySelectorAll(".field-error")) old.remove();
    for (const old of editor.querySelectorAll(".has-error")) old.classList.remove("has-error");
    const items = document.querySelectorAll("#spec-error-list li[data-field]");
    for (const li of items) {
      const el = targetFor(li.dataset.field || "");
      el.classList.add("has-error");
      const note = document.createElement("span");
      note.className = "field-error";
      note.setAttribute("role", "note");
      note.textContent = li.textContent.trim();
      const anchor = el.tagName === "FIELDSET" ? el.lastElementChild : el;
      anchor.insertAdjacentElement(el.tagName === "FIELDSET" ? "beforebegin" : "afterend", note);
    }
  }

  document.body.addEventListener("htmx:afterSwap", (e) => {
    if (e.detail.target && e.detail.target.id === "spec-result") markErrors();
  });
  markErrors();
  try { parseDoc(text.value); showBroken(false); } catch (e) { showBroken(true); }
})();
