// Live mode: htmx's sse extension connects; rows and events go in by id (a
// replay never shows twice); the last id is kept in sse-connect as after=, as
// htmx's new EventSource after an error sends no Last-Event-ID.
(() => {
  const $ = (s) => document.querySelector(s);
  const byId = (id) => document.getElementById(id);
  const on = (type, fn) => document.addEventListener(type, fn);
  const frag = (html) => { const t = document.createElement("template"); t.innerHTML = html; return t.content; };
  const qs = () => new URLSearchParams(location.search);
  const here = () => location.pathname + location.search;
  const withParam = (href, k, v) => { const u = new URL(href, location.href); u.searchParams.set(k, v); return u.pathname + u.search; };
  let since = null, pending = [], countsTimer = null, drawerTimer = null;
  const REFRESH = "X-Live-Refresh";  // marks live.js's own background refreshes
  const bump = (sel) => { const el = $(sel); if (el) el.textContent = (+el.textContent.replace(/\D/g, "") + 1).toLocaleString(); };
  const created = (tr) => Date.parse(tr.querySelector("time")?.dateTime || 0);
  function insertTop(rows) {
    const d = byId("live-divider");
    if (!d) return;
    if (d.hidden) { d.hidden = false; d.cells[0].textContent = "new since " + since; }
    // Oldest first: each lands above the last.
    rows.forEach((tr) => { if (!byId(tr.id)) { byId("rows").prepend(tr); bump("#shown"); } });
  }
  const showPending = (b = byId("live-new")) => { if (b) { b.hidden = !pending.length; b.textContent = pending.length + " new"; } };
  function onRow(data) {
    const tr = frag(data).querySelector("tr.run");
    if (!tr) return;
    tr.querySelector("a.open")?.setAttribute("href", withParam(location.href, "run", tr.dataset.run));
    const old = byId(tr.id), first = $("#rows tr.run");
    if (old) {
      tr.classList.toggle("sel", old.classList.contains("sel"));
      old.replaceWith(tr);
    } else if (!first || created(tr) >= created(first)) {
      // New: never move what is read; scrolled down, count it.
      bump("#total");
      const top = ($("#scroll")?.scrollTop || 0) < 8;
      if (top && (qs().get("sort") || "created_at:desc") === "created_at:desc") insertTop([tr]);
      else if (!pending.some((p) => p.id === tr.id)) { pending.push(tr); showPending(); }
    }
    refreshCounts();
  }
  const refreshCounts = () => { countsTimer = countsTimer || setTimeout(() => { countsTimer = null; get("#rail"); get("#chart"); }, 3000); };
  // Each target is its own source: from one source (htmx's default, the body)
  // a second request queues behind the first, and htmx drops the queued one's
  // promise, so its failure (server down) is an unhandled rejection.
  const get = (t) => $(t) && htmx.ajax("GET", here(), { source: t, target: t, swap: "outerHTML", headers: { [REFRESH]: "1" } }).catch(() => 0);
  const refreshDrawer = (ms) => { clearTimeout(drawerTimer); drawerTimer = setTimeout(() => get("#drawer[data-run-id]"), ms); };
  // A refresh turned away for now (the server busy or over the rate: 503,
  // 429) keeps what is shown and tries again later: nobody asked for it, and
  // an error in its place would only hide the counts or the run.
  on("htmx:beforeSwap", (e) => {
    const d = e.detail;
    if (![429, 503].includes(d.xhr.status) || !(d.requestConfig && d.requestConfig.headers[REFRESH])) return;
    d.shouldSwap = false;
    d.isError = false;
    if (d.target.id === "drawer") refreshDrawer(3000); else refreshCounts();
  });
  function onTrace(el, type, data) {
    if (type === "end") return refreshDrawer(0);
    const f = frag(data);
    ["d-status", "d-progress"].forEach((id) => { const n = f.getElementById(id); if (n && byId(id)) byId(id).replaceWith(n); });
    const row = f.querySelector(".ev"), con = byId("console"), levels = qs().get("ev_level");
    // Grow only a console showing the end (no "load more").
    if (row && con && !byId("events-more") && !byId(row.id) &&
        (!levels || levels.split(",").some((l) => row.classList.contains("lv-" + l)))) {
      const box = con.closest(".d-body");
      const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      con.querySelector(".empty-tab")?.remove();
      con.append(row);
      if (follow) box.scrollTop = box.scrollHeight;  // unless the reader scrolled up
    }
    if (/^(tool_call|interaction)\./.test(type) && /tools|interactions/.test(el.dataset.tab)) refreshDrawer(400);
  }
  const state = (t, c) => { const s = byId("live-state"); if (s) { s.textContent = t; s.className = "live-state " + c; } };
  on("htmx:sseBeforeMessage", (e) => {
    const el = e.target, m = e.detail;
    e.preventDefault();
    if (m.lastEventId) el.setAttribute("sse-connect", withParam(el.getAttribute("sse-connect"), "after", m.lastEventId));
    if (el.id === "live-feed") onRow(m.data);
    else if (el.id === "d-live") onTrace(el, m.type, m.data);
  });
  on("htmx:sseOpen", (e) => {
    if (e.target.id !== "live-feed") return;
    since = since || new Date().toLocaleTimeString("en-GB");
    state("● Connected", "on");
  });
  on("htmx:sseError", (e) => { if (e.target.id === "live-feed") state("Reconnecting…", "off"); });
  on("htmx:afterSettle", (e) => {
    if (e.target.id === "list" || e.target.id === "view") { pending = []; since = null; }
  });
  on("click", (e) => {
    if (!e.target.closest("#live-new")) return;
    insertTop(pending);
    pending = [];
    showPending();
    byId("scroll").scrollTop = 0;
  });
})();
