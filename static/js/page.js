// Runyard runs page: keyboard, selection, columns, copy buttons, command suggestions.
// Only what htmx cannot do; every view change still goes through a real URL.
(() => {
  "use strict";
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => [...r.querySelectorAll(s)];
  const body = document.body;
  const COLS = ["trigger", "tools", "issues", "dur", "time"];
  const COLS_KEY = "runyard.hiddenColumns";
  const RAIL_KEY = "runyard.rail";

  const typing = (el) => !!el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  const drawerOpen = () => { const d = $("#drawer"); return !!d && !d.hidden; };
  const openRunId = () => { const d = $("#drawer[data-run-id]"); return d ? d.dataset.runId : null; };
  const rows = () => $$("#rows tr.run");

  function toast(text) {
    const t = $("#toast");
    t.textContent = text; t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 2200);
  }

  // Column visibility, remembered per browser.
  function hiddenCols() {
    try { return JSON.parse(localStorage.getItem(COLS_KEY) || "[]"); } catch (e) { return []; }
  }
  function applyColumns() {
    const hidden = hiddenCols();
    COLS.forEach((c) => body.classList.toggle("hide-" + c, hidden.includes(c)));
    $$("input[data-col]").forEach((box) => { box.checked = !hidden.includes(box.dataset.col); });
  }

  // Rail: collapsed state remembered; on narrow screens it is an overlay.
  function toggleRail() {
    const narrow = matchMedia("(max-width: 1000px)").matches;
    if (narrow) { body.classList.toggle("rail-on"); body.classList.remove("rail-off"); return; }
    const off = body.classList.toggle("rail-off");
    localStorage.setItem(RAIL_KEY, off ? "off" : "on");
  }

  // The run whose drawer was asked for last: a late swap of an older one must
  // not pull the selection back while the newer request is on its way.
  let wanted = null;
  function select(tr, open) {
    if (!tr) return;
    $$("#rows tr.run.sel").forEach((r) => r.classList.remove("sel"));
    tr.classList.add("sel");
    tr.scrollIntoView({ block: "nearest" });
    if (open) { wanted = tr.dataset.run; tr.querySelector("a.open").click(); }
  }
  function move(step) {
    const all = rows();
    if (!all.length) return;
    let cur = $("#rows tr.run.sel");
    if (!cur && openRunId()) cur = document.getElementById("run-" + openRunId());
    let i = all.indexOf(cur);
    i = i < 0 ? (step > 0 ? 0 : all.length - 1) : Math.max(0, Math.min(all.length - 1, i + step));
    select(all[i], drawerOpen());
  }
  function refresh() {
    const url = location.pathname + location.search;
    // Failures already toast (sendError below).
    // Each its own source, so the drawer's request does not queue behind the
    // view's (see live.js's get).
    const get = (t) => htmx.ajax("GET", url, { source: t, target: t, swap: "outerHTML" }).catch(() => 0);
    get("#view");
    if (drawerOpen()) get("#drawer");
  }
  function markOpenRow() {
    // Follow the open drawer; with none open, keep the keyboard's selection.
    const id = openRunId();
    if (!id || (wanted && wanted !== id)) return;
    wanted = null;
    $$("#rows tr.run").forEach((r) => r.classList.toggle("sel", r.dataset.run === id));
  }
  function updateShown() {
    const shown = $("#shown");
    if (shown) shown.textContent = rows().length.toLocaleString("en-US");
  }

  // Command suggestions: replace the token being typed with the chosen one.
  function accept(token) {
    const input = $("#cmd");
    const tail = token.endsWith(":") || token.endsWith(",") ? "" : " ";
    input.value = input.value.replace(/\S*$/, "") + token + tail;
    input.focus();
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("keydown", (e) => {
    if (e.metaKey || e.ctrlKey || e.altKey) return;
    const t = e.target;
    if (t && t.id === "cmd") {
      const first = $("#cmd-help [data-token]");
      if (e.key === "Tab" && first && !e.shiftKey) { e.preventDefault(); accept(first.dataset.token); }
      else if (e.key === "ArrowDown" && first) { e.preventDefault(); first.focus(); }
      else if (e.key === "Escape") { t.blur(); }
      return;
    }
    if (t && t.matches && t.matches("[data-token]")) {
      const list = $$("#cmd-help [data-token]");
      const i = list.indexOf(t);
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const next = list[i + (e.key === "ArrowDown" ? 1 : -1)];
        (next || $("#cmd")).focus();
      } else if (e.key === "Escape") { $("#cmd").focus(); }
      return;
    }
    if (typing(t)) return;
    const help = $("#help");
    if (help.open) return;  // the dialog handles Esc itself
    switch (e.key) {
      case "/": e.preventDefault(); $("#cmd").focus(); $("#cmd").select(); break;
      case "?": e.preventDefault(); help.showModal(); break;
      case "r": refresh(); break;
      case "b": toggleRail(); break;
      case "j": { const l = $("#live-toggle"); if (l) l.click(); break; }
      case "ArrowDown": e.preventDefault(); move(1); break;
      case "ArrowUp": e.preventDefault(); move(-1); break;
      case "Enter": { const s = $("#rows tr.run.sel"); if (s) { e.preventDefault(); select(s, true); } break; }
      case "Escape": { const c = $("#drawer a.close"); if (c) c.click(); break; }
      default: return;
    }
  });

  document.addEventListener("click", (e) => {
    const t = e.target;
    const action = t.closest("[data-action]");
    if (action) {
      if (action.dataset.action === "help") $("#help").showModal();
      if (action.dataset.action === "rail") toggleRail();
      return;
    }
    const sugg = t.closest("#cmd-help [data-token]");
    if (sugg) { accept(sugg.dataset.token); return; }
    const copyJson = t.closest("[data-copy-json]");
    if (copyJson) {
      fetch(copyJson.dataset.copyJson, { headers: { Accept: "application/json" } })
        .then((r) => r.json())
        .then((obj) => navigator.clipboard.writeText(JSON.stringify(obj, null, 2)))
        .then(() => toast("Run copied as JSON"), () => toast("Could not copy"));
      return;
    }
    if (t.closest("[data-copy-link]")) {
      navigator.clipboard.writeText(location.href).then(() => toast("Link copied"), () => toast("Could not copy"));
      return;
    }
    // A click anywhere on a row opens it, unless it was on a link of its own.
    const tr = t.closest("#rows tr.run");
    if (tr && !t.closest("a, button, input")) select(tr, true);
    if (tr && t.closest("a.open")) { select(tr, false); wanted = tr.dataset.run; }
  });

  document.addEventListener("change", (e) => {
    const box = e.target.closest("input[data-col]");
    if (!box) return;
    const hidden = COLS.filter((c) => { const b = $(`input[data-col="${c}"]`); return b && !b.checked; });
    localStorage.setItem(COLS_KEY, JSON.stringify(hidden));
    applyColumns();
  });

  // A submitted command's answer (its errors) must not be replaced by the
  // as-you-type help: not by the debounced one that fires just after the Enter
  // key, nor by one already in flight when it was pressed (its answer can land
  // after the command's).
  let submitted = null;
  document.addEventListener("submit", (e) => { if (e.target.id === "cmdform") submitted = $("#cmd").value; }, true);
  document.addEventListener("input", (e) => { if (e.target.id === "cmd" && e.target.value !== submitted) submitted = null; });
  // The element that asked: on htmx:beforeSwap, detail.elt is the swap's target.
  const helpForSubmitted = (e) => {
    const asker = e.detail.requestConfig ? e.detail.requestConfig.elt : e.detail.elt;
    return !!asker && asker.id === "cmd" && asker.value === submitted;
  };
  document.addEventListener("htmx:beforeRequest", (e) => { if (helpForSubmitted(e)) e.preventDefault(); });
  document.addEventListener("htmx:beforeSwap", (e) => { if (helpForSubmitted(e)) e.detail.shouldSwap = false; });

  // A Run form refused for now (the server busy, its database failing, the
  // rate limit) comes back empty, because the server never read it: put back
  // what was typed, so that trying again is one click.
  let typed = null;
  document.addEventListener("htmx:beforeSwap", (e) => {
    const form = e.detail.target && e.detail.target.id === "run-form" ? e.detail.target.querySelector("form") : null;
    typed = form && [429, 503].includes(e.detail.xhr.status) ? new FormData(form) : null;
  });
  document.addEventListener("htmx:afterSwap", () => {
    const form = typed && $("#run-form form");
    if (form) {
      for (const [name, value] of typed) {
        const field = form.elements.namedItem(name);
        if (!(field instanceof HTMLInputElement) || name === "csrf_token") continue;
        if (field.type === "checkbox") field.checked = true; else field.value = value;
      }
    }
    typed = null;
  });

  document.addEventListener("htmx:afterSettle", () => { applyColumns(); updateShown(); markOpenRow(); });
  document.addEventListener("htmx:sendError", () => toast("The server could not be reached"));
  // htmx rejects a failed request's promise with no reason, and a request
  // queued behind another on the same element gets a promise nobody holds:
  // its failure would surface as an uncaught "undefined". The toast above has
  // already said what happened.
  window.addEventListener("unhandledrejection", (e) => { if (e.reason === undefined) e.preventDefault(); });
  document.addEventListener("htmx:responseError", (e) => {
    if (e.detail.xhr.status >= 500) toast("The server failed to answer (" + e.detail.xhr.status + ")");
  });

  if (localStorage.getItem(RAIL_KEY) === "off") body.classList.add("rail-off");
  applyColumns();
  markOpenRow();
})();
