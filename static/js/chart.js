// Drag across the timeline to set from/to; click a bar to zoom into its bucket.
(() => {
  "use strict";
  let drag = null;

  const frac = (svg, x) => {
    const box = svg.getBoundingClientRect();
    return Math.max(0, Math.min(1, (x - box.left) / box.width));
  };
  const iso = (ms) => new Date(Math.round(ms)).toISOString();

  function go(svg, a, b) {
    const start = Number(svg.dataset.start), end = Number(svg.dataset.end);
    const bucket = Number(svg.dataset.bucket);
    let from = start + Math.min(a, b) * (end - start);
    let to = start + Math.max(a, b) * (end - start);
    // Snap to whole seconds and keep at least one second of range.
    from = Math.floor(from / 1000) * 1000;
    to = Math.max(from + 1000, Math.ceil(to / 1000) * 1000);
    if (bucket && to - from < 1000) to = from + 1000;
    const params = new URLSearchParams(location.search);
    ["cursor", "from", "to"].forEach((k) => params.delete(k));
    params.set("from", iso(from));
    params.set("to", iso(to));
    const url = "/?" + params.toString();
    // A failure already shows (page.js's sendError toast); caught, it is no
    // script error.
    htmx.ajax("GET", url, { source: "#view", target: "#view", swap: "outerHTML" }).then(() => {
      history.pushState({ htmx: true }, "", url);
    }, () => 0);
  }

  document.addEventListener("pointerdown", (e) => {
    const svg = e.target.closest && e.target.closest("svg.timeline");
    if (!svg || e.button !== 0) return;
    e.preventDefault();
    svg.setPointerCapture(e.pointerId);
    drag = { svg, a: frac(svg, e.clientX), b: null, bar: e.target.closest("g.bar") };
  });
  document.addEventListener("pointermove", (e) => {
    if (!drag) return;
    drag.b = frac(drag.svg, e.clientX);
    const brush = drag.svg.querySelector(".brush");
    const lo = Math.min(drag.a, drag.b), hi = Math.max(drag.a, drag.b);
    brush.setAttribute("x", (lo * 100).toFixed(3) + "%");
    brush.setAttribute("width", ((hi - lo) * 100).toFixed(3) + "%");
  });
  document.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (d.b !== null && Math.abs(d.b - d.a) > 0.005) { go(d.svg, d.a, d.b); return; }
    d.svg.querySelector(".brush").setAttribute("width", "0");
    if (d.bar && Number(d.bar.dataset.count) > 0) {
      // A click on a bar: that bucket alone.
      const start = Number(d.svg.dataset.start), end = Number(d.svg.dataset.end);
      const b0 = Number(d.bar.dataset.start), w = Number(d.svg.dataset.bucket);
      go(d.svg, (b0 - start) / (end - start), (b0 + w - start) / (end - start));
    }
  });
})();
