// Lineage explorer: pan, zoom, select, highlight. No network, no innerHTML:
// every text from the graph is set with textContent.
"use strict";
(function () {
  const viewport = document.getElementById("viewport");
  const svg = document.getElementById("lineage-svg");
  const dataEl = document.getElementById("lineage-data");
  if (!viewport || !svg || !dataEl) return;
  const data = JSON.parse(dataEl.textContent || "{}");
  const nodes = data.nodes || {};
  const edges = data.edges || [];
  const parents = {}, children = {};
  for (const [a, b, rel] of edges) {
    (children[a] = children[a] || []).push([b, rel]);
    (parents[b] = parents[b] || []).push([a, rel]);
  }

  // --- pan and zoom on the viewBox ---
  const vb0 = svg.viewBox.baseVal;
  const home = { x: vb0.x, y: vb0.y, w: vb0.width, h: vb0.height };
  let vb = Object.assign({}, home);
  function apply() { svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].join(" ")); viewport.dataset.zoom = (home.w / vb.w).toFixed(3); }
  function toSvg(cx, cy) {
    const r = svg.getBoundingClientRect();
    // preserveAspectRatio xMidYMid meet: one scale, centred.
    const s = Math.max(vb.w / r.width, vb.h / r.height);
    return { x: vb.x + vb.w / 2 + (cx - r.left - r.width / 2) * s, y: vb.y + vb.h / 2 + (cy - r.top - r.height / 2) * s, s: s };
  }
  function zoom(factor, cx, cy) {
    const r = svg.getBoundingClientRect();
    if (cx === undefined) { cx = r.left + r.width / 2; cy = r.top + r.height / 2; }
    const p = toSvg(cx, cy);
    const nw = Math.min(Math.max(vb.w / factor, home.w / 40), home.w * 4);
    const k = nw / vb.w;
    vb = { x: p.x - (p.x - vb.x) * k, y: p.y - (p.y - vb.y) * k, w: nw, h: vb.h * k };
    apply();
  }
  function pan(dx, dy) { vb.x += dx; vb.y += dy; apply(); }
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.8));
  document.getElementById("zoom-fit").addEventListener("click", () => { vb = Object.assign({}, home); apply(); });
  viewport.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX, e.clientY); }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, moved: false, id: e.pointerId };
  });
  viewport.addEventListener("pointermove", (e) => {
    if (!drag || drag.id !== e.pointerId) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) { drag.moved = true; viewport.classList.add("dragging"); viewport.setPointerCapture(e.pointerId); }
    const s = toSvg(0, 0).s;
    pan(-dx * s, -dy * s);
    drag.x = e.clientX; drag.y = e.clientY;
  });
  function endDrag(e) {
    if (!drag) return;
    const moved = drag.moved;
    viewport.classList.remove("dragging");
    drag = null;
    if (moved) { e.preventDefault(); suppressClick = true; }
  }
  let suppressClick = false;
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);
  viewport.addEventListener("keydown", (e) => {
    if (e.target !== viewport) return;
    const step = vb.w / 10;
    const keys = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (keys[e.key]) { pan(keys[e.key][0], keys[e.key][1]); e.preventDefault(); }
    else if (e.key === "+" || e.key === "=") { zoom(1.25); e.preventDefault(); }
    else if (e.key === "-") { zoom(0.8); e.preventDefault(); }
    else if (e.key === "0") { vb = Object.assign({}, home); apply(); e.preventDefault(); }
  });

  // --- selection and highlight ---
  const groups = {};
  for (const g of svg.querySelectorAll("g.node[data-node]")) groups[g.getAttribute("data-node")] = g;
  const edgeGroups = Array.from(svg.querySelectorAll("g.edge[data-from]"));
  function closure(start, adj) {
    const seen = new Set(), todo = [start];
    while (todo.length) {
      const n = todo.pop();
      for (const [m] of adj[n] || []) if (!seen.has(m)) { seen.add(m); todo.push(m); }
    }
    return seen;
  }
  function labelOf(dom) {
    const n = nodes[dom];
    if (!n) return dom;
    for (const [k, v] of n.attrs) if (k === "label" && v) return String(v).split("\n").join(" ");
    return n.id;
  }
  function attr(dom, key) {
    const n = nodes[dom];
    if (!n) return undefined;
    for (const [k, v] of n.attrs) if (k === key) return v;
    return undefined;
  }
  const facts = document.getElementById("details-facts");
  const related = document.getElementById("details-related");
  function select(dom) {
    const n = nodes[dom];
    if (!n) return;
    for (const g of Object.values(groups)) g.classList.remove("selected", "related", "ancestor", "descendant");
    const anc = closure(dom, parents), desc = closure(dom, children);
    viewport.classList.add("has-selection");
    groups[dom].classList.add("selected");
    for (const a of anc) if (groups[a]) groups[a].classList.add("related", "ancestor");
    for (const d of desc) if (groups[d]) groups[d].classList.add("related", "descendant");
    const inSet = (x) => x === dom || anc.has(x) || desc.has(x);
    for (const e of edgeGroups) e.classList.toggle("related", inSet(e.getAttribute("data-from")) && inSet(e.getAttribute("data-to")));
    viewport.dataset.selected = dom;
    viewport.dataset.ancestors = String(anc.size);
    viewport.dataset.descendants = String(desc.size);

    document.getElementById("details-title").textContent = labelOf(dom);
    document.getElementById("details-hint").hidden = true;
    facts.replaceChildren();
    const add = (k, v) => {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; facts.append(dt, dd);
      return dd;
    };
    add("node", n.id).className = "mono";
    for (const [k, v] of n.attrs) {
      if (v === "" || v === null) continue;
      let text = Array.isArray(v) ? v.join(", ") : String(v);
      if (k === "governance") text = ({ violation: "✗ violation", denied: "⊘ denied", ok: "✓ ok" })[v] || text;
      const dd = add(k.split("_").join(" "), text);
      dd.dataset.key = k;
      if (k.indexOf("digest") >= 0 || k.endsWith("_id")) dd.className = "mono";
    }
    facts.hidden = false;
    // Payloads this node used or generated, by digest.
    const ul = document.getElementById("details-payloads");
    ul.replaceChildren();
    const own = attr(dom, "digest");
    const payloads = [];
    if (own) payloads.push(["this payload", own]);
    for (const [p, rel] of parents[dom] || []) if (rel === "used" || rel === "generated") { const d = attr(p, "digest"); if (d) payloads.push(["input", d]); }
    for (const [c, rel] of children[dom] || []) if (rel === "used" || rel === "generated") { const d = attr(c, "digest"); if (d) payloads.push(["output", d]); }
    for (const [what, d] of payloads) { const li = document.createElement("li"); li.textContent = what + ": " + d; ul.append(li); }
    if (!payloads.length) { const li = document.createElement("li"); li.textContent = "none"; ul.append(li); }
    document.getElementById("details-lineage").textContent = "▲ " + anc.size + " ancestors, ▼ " + desc.size + " descendants highlighted.";
    const idx = attr(dom, "index");
    const ledger = document.getElementById("details-ledger");
    if (attr(dom, "kind") === "ledger_entry" && typeof idx === "number" && idx >= 0) {
      document.getElementById("details-ledger-link").setAttribute("href", "/proofs?index=" + idx);
      ledger.hidden = false;
    } else { ledger.hidden = true; }
    related.hidden = false;
  }
  function clear() {
    viewport.classList.remove("has-selection");
    delete viewport.dataset.selected;
    for (const g of Object.values(groups)) g.classList.remove("selected", "related", "ancestor", "descendant");
  }
  svg.addEventListener("click", (e) => {
    if (suppressClick) { suppressClick = false; return; }
    const g = e.target.closest ? e.target.closest("g.node[data-node]") : null;
    if (g) select(g.getAttribute("data-node")); else clear();
  });
  svg.addEventListener("keydown", (e) => {
    const g = e.target.closest ? e.target.closest("g.node[data-node]") : null;
    if (g && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); select(g.getAttribute("data-node")); }
  });
  for (const a of document.querySelectorAll("a.jump[data-jump]")) {
    a.addEventListener("click", (e) => { e.preventDefault(); const d = a.getAttribute("data-jump"); if (groups[d]) { select(d); groups[d].focus(); } });
  }
  apply();
  viewport.dataset.ready = "1";
})();
