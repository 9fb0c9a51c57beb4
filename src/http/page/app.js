// twinrt live page: the supervision tree, the sinks and the twins on a map of Martinique.
// Plain JavaScript, no dependencies; everything comes from this server's /api/v1.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAP_LIMIT = 5000;          // at most this many twins drawn on the map
  const MAP_REFRESH_MS = 5000;     // the map's twins are fetched again this often
  const SENSOR_LIST_LIMIT = 500;   // at most this many sensors listed under a district
  const TYPE_COLORS = {
    "traffic": "#e4572e",
    "air-quality": "#17a398",
    "parking": "#7b4fd6",
    "noise": "#e8a317",
    "weather": "#2f7ed8",
    "light": "#b8a000",
  };
  const BAD_STATUSES = new Set(["failed", "restarting", "stopped", "stopping", "unstarted"]);

  const $ = (id) => document.getElementById(id);
  const state = {
    snapshot: null,       // last snapshot (from the event stream or the initial load)
    live: false,          // a snapshot came from the event stream
    expanded: new Set(),  // district paths whose sensors are listed
    sensors: new Map(),   // district path -> [Actor]
    features: new Map(),  // twin id -> GeoJSON feature (last values)
    nodes: new Map(),     // actor path -> tree node
    project: null,        // [lon, lat] -> [x, y]
  };

  // ---------- helpers ----------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function fmt(n) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US");
  }

  function fmtValue(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 100 ? 0 : 1);
    if (typeof v === "boolean") return v ? "on" : "off";
    return String(v);
  }

  function ago(ms) {
    if (ms === null || ms === undefined) return "never";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { "accept": "application/json" } });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  function setConn(kind, text) {
    $("conn").dataset.state = kind;
    $("conn-text").textContent = text;
  }

  // ---------- the supervision tree ----------

  // One node of the tree: <li data-path> with a row of name, status and counters.
  function makeNode(actor) {
    const li = el("li", "node");
    li.dataset.path = actor.path;
    li.setAttribute("role", "treeitem");
    const row = el("div", "row");
    const caret = el("span", "caret");
    const name = el("span", "name", actor.name);
    const kind = el("span", "kind kind-" + actor.kind, actor.kind);
    const status = el("span", "status");
    const metrics = el("span", "metrics");
    row.append(caret, name, kind, status, metrics);
    li.append(row);
    const ul = el("ul", "children");
    ul.setAttribute("role", "group");
    li.append(ul);
    return { li, row, caret, name, status, metrics, ul, sensorsUl: null };
  }

  function metric(label, value, cls, title) {
    const m = el("span", "metric" + (cls ? " " + cls : ""));
    m.append(el("span", "m-label", label), el("span", "m-value", value));
    if (title) m.title = title;
    return m;
  }

  function setStatus(node, status, failure) {
    node.status.textContent = status;
    node.status.className = "status st-" + status;
    node.li.classList.toggle("bad", BAD_STATUSES.has(status));
    node.li.dataset.status = status;
    node.row.title = failure ? "last failure: " + failure.reason + " (" + ago(failure.at_unix_ms) + ")" : "";
  }

  function renderTree(snap) {
    const tree = $("tree");
    const byParent = new Map();
    for (const s of snap.sensors_by_parent || []) byParent.set(s.parent, s);
    const sinks = new Map((snap.sinks || []).map((s) => [s.kind + ":" + s.name, s]));
    const seen = new Set();

    for (const a of snap.actors || []) {
      seen.add(a.path);
      let node = state.nodes.get(a.path);
      if (!node) {
        node = makeNode(a);
        state.nodes.set(a.path, node);
        const parent = a.parent ? state.nodes.get(a.parent) : null;
        (parent ? parent.ul : tree).append(node.li);
        if (byParent.has(a.path)) {
          node.li.classList.add("district");
          const tag = node.row.querySelector(".kind");
          tag.textContent = "district";
          tag.className = "kind kind-district";
          tag.title = "a district supervisor (one-for-one over its sensors)";
          node.row.classList.add("clickable");
          node.row.tabIndex = 0;
          node.row.addEventListener("click", () => toggleDistrict(a.path));
          node.row.addEventListener("keydown", (e) => {
            if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggleDistrict(a.path); }
          });
          node.row.addEventListener("mouseenter", () => highlightCommune(a.name, true));
          node.row.addEventListener("mouseleave", () => highlightCommune(a.name, false));
          node.sensorsUl = el("ul", "sensors");
          node.li.append(node.sensorsUl);
        }
      }
      setStatus(node, a.status, a.last_failure);
      const m = [];
      m.push(metric("restarts", fmt(a.restarts), a.restarts > 0 ? "warn" : "", "restarts of this actor by its supervisor"));
      const sum = byParent.get(a.path);
      if (sum) {
        const allRunning = sum.running === null || sum.running === undefined || sum.running === sum.sensors;
        m.push(metric("sensors", sum.running === null || sum.running === undefined
          ? fmt(sum.sensors) : fmt(sum.running) + "/" + fmt(sum.sensors), allRunning ? "" : "bad", "sensor actors running / total"));
        m.push(metric("sensor restarts", fmt(sum.restarts), sum.restarts > 0 ? "warn" : "", "restarts of this district's sensors"));
        m.push(metric("queue", fmt(sum.queue_depth), sum.queue_depth > 100 ? "warn" : "", "messages waiting in its sensors' mailboxes"));
        node.caret.textContent = state.expanded.has(a.path) ? "▾" : "▸";
      } else if (a.kind === "supervisor") {
        const kids = (snap.actors || []).filter((c) => c.parent === a.path).length;
        m.push(metric("children", fmt(kids)));
        node.caret.textContent = kids > 0 ? "▾" : "";
      } else {
        m.push(metric("queue", fmt(a.queue_depth), a.queue_depth > 100 ? "warn" : "", "messages waiting in the actor's mailbox"));
        const sink = sinks.get(a.name);
        if (sink) {
          m.push(metric("buffer", fmt(sink.queue_len) + "/" + fmt(sink.queue_capacity),
            sink.queue_len > sink.queue_capacity * 0.8 ? "bad" : "", "observations waiting in the sink's queue"));
          m.push(metric("link", sink.connected ? "up" : "down", sink.connected ? "ok" : "bad"));
        }
      }
      node.metrics.replaceChildren(...m);
    }
    for (const [path, node] of state.nodes) {
      if (!seen.has(path)) { node.li.remove(); state.nodes.delete(path); }
    }
    $("tree-empty").hidden = state.nodes.size > 0;
    for (const path of state.expanded) renderSensors(path);
  }

  async function toggleDistrict(path) {
    if (state.expanded.has(path)) {
      state.expanded.delete(path);
      renderSensors(path);
    } else {
      state.expanded.add(path);
      renderSensors(path);
      await loadSensors(path);
    }
    const node = state.nodes.get(path);
    if (node) node.caret.textContent = state.expanded.has(path) ? "▾" : "▸";
  }

  // A district's sensors, from the API's `parent` filter.
  async function loadSensors(path) {
    const groups = (state.snapshot && state.snapshot.sensors_by_parent) || [];
    const group = groups.find((g) => g.parent === path);
    const count = group ? group.sensors : 0;
    try {
      const page = await getJSON("/api/v1/actors?kind=sensor&parent=" + encodeURIComponent(path) + "&limit=" + SENSOR_LIST_LIMIT);
      state.sensors.set(path, { items: page.items, total: page.total || count });
    } catch (e) {
      state.sensors.set(path, { items: [], total: count, error: String(e) });
    }
    renderSensors(path);
  }

  function renderSensors(path) {
    const node = state.nodes.get(path);
    if (!node || !node.sensorsUl) return;
    const ul = node.sensorsUl;
    if (!state.expanded.has(path)) { ul.replaceChildren(); node.li.classList.remove("open"); return; }
    node.li.classList.add("open");
    const data = state.sensors.get(path);
    if (!data) { ul.replaceChildren(el("li", "loading", "loading sensors…")); return; }
    const rows = [];
    if (data.error) rows.push(el("li", "error", data.error));
    for (const a of data.items) {
      const li = el("li", "sensor");
      li.dataset.path = a.path;
      li.dataset.status = a.status;
      li.classList.toggle("bad", BAD_STATUSES.has(a.status));
      const f = state.features.get(a.name);
      const type = f ? f.properties.type : "";
      const dot = el("span", "type-dot");
      if (type) { dot.style.background = TYPE_COLORS[type] || "#888"; dot.title = type; }
      const status = el("span", "status st-" + a.status, a.status);
      const vals = el("span", "values", f ? valuesText(f.properties.values) : "");
      li.append(dot, el("span", "name", a.name), status,
        metric("restarts", fmt(a.restarts), a.restarts > 0 ? "warn" : ""),
        metric("queue", fmt(a.queue_depth)),
        metric("seq", f ? fmt(f.properties.seq) : "–"), vals);
      if (a.last_failure) li.title = "last failure: " + a.last_failure.reason + " (" + ago(a.last_failure.at_unix_ms) + ")";
      rows.push(li);
    }
    if (data.total > data.items.length) {
      rows.push(el("li", "more", "showing " + fmt(data.items.length) + " of " + fmt(data.total) + " sensors"));
    }
    ul.replaceChildren(...rows);
  }

  // ---------- sinks ----------

  function renderSinks(snap) {
    const body = $("sinks-body");
    const rows = (snap.sinks || []).map((s) => {
      const tr = el("tr");
      tr.dataset.sink = s.name;
      const conn = el("td");
      const pill = el("span", "pill " + (s.connected ? "ok" : "bad"), s.connected ? "connected" : (s.ever_connected ? "reconnecting" : "not connected"));
      conn.append(pill);
      if (s.last_success_at_unix_ms) conn.append(el("span", "muted small", " last ack " + ago(s.last_success_at_unix_ms)));
      const queue = el("td", "num");
      const bar = el("span", "bar");
      const fill = el("span", "fill");
      const ratio = s.queue_capacity > 0 ? s.queue_len / s.queue_capacity : 0;
      fill.style.width = Math.min(100, Math.round(ratio * 100)) + "%";
      if (ratio > 0.8) fill.classList.add("hot");
      bar.append(fill);
      queue.append(el("span", "", fmt(s.queue_len) + " / " + fmt(s.queue_capacity) + " "), bar);
      const err = el("td", "err");
      if (s.last_error) {
        err.textContent = s.last_error;
        err.title = s.last_error + (s.last_error_at_unix_ms ? " (" + ago(s.last_error_at_unix_ms) + ")" : "");
        if (s.last_error_at_unix_ms) err.append(el("span", "muted small", " · " + ago(s.last_error_at_unix_ms)));
      } else {
        err.append(el("span", "muted", "none"));
      }
      const lm = s.last_minute || {};
      tr.append(
        el("td", "strong", s.name),
        el("td", "mono", s.target),
        conn,
        queue,
        el("td", "num", fmt(s.sent)),
        el("td", "num" + (s.failed > 0 ? " warn-text" : ""), fmt(s.failed)),
        el("td", "num" + (s.dropped > 0 ? " bad-text" : ""), fmt(s.dropped)),
        el("td", "num" + (s.retries > 0 ? " warn-text" : ""), fmt(s.retries)),
        el("td", "num", fmt(lm.sent)),
        err,
      );
      return tr;
    });
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", "muted", "no sinks configured");
      td.colSpan = 10;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  // ---------- header ----------

  function renderHeader(snap) {
    if (snap.twins_running !== undefined && snap.twins !== undefined) {
      $("twins-running").textContent = fmt(snap.twins_running) + " / " + fmt(snap.twins);
      $("twins-running").classList.toggle("bad-text", snap.twins_running < snap.twins);
    }
    let restarts = 0;
    for (const a of snap.actors || []) restarts += a.restarts || 0;
    for (const s of snap.sensors_by_parent || []) restarts += s.restarts || 0;
    $("restarts-total").textContent = fmt(restarts);
    $("restarts-total").classList.toggle("warn-text", restarts > 0);
    const t = snap.time ? new Date(snap.time) : new Date();
    $("last-update").textContent = t.toLocaleTimeString("en-GB");
    $("last-update").title = snap.time || "";
  }

  function applySnapshot(snap) {
    state.snapshot = snap;
    renderHeader(snap);
    renderTree(snap);
    renderSinks(snap);
  }

  // ---------- the map ----------

  function rings(geometry) {
    if (!geometry) return [];
    if (geometry.type === "Polygon") return geometry.coordinates;
    if (geometry.type === "MultiPolygon") return geometry.coordinates.flat();
    return [];
  }

  function pathData(geometry) {
    let d = "";
    for (const ring of rings(geometry)) {
      ring.forEach((p, i) => {
        const [x, y] = state.project(p);
        d += (i === 0 ? "M" : "L") + x.toFixed(1) + " " + y.toFixed(1);
      });
      d += "Z";
    }
    return d;
  }

  // Equirectangular projection around Martinique: longitudes shrunk by cos(14.6°).
  function setProjection(outline) {
    let minLon = Infinity, maxLon = -Infinity, minLat = Infinity, maxLat = -Infinity;
    for (const ring of rings(outline.geometry)) {
      for (const [lon, lat] of ring) {
        minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
        minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
      }
    }
    const k = Math.cos(14.6 * Math.PI / 180);
    const width = 800, pad = 16;
    const scale = (width - 2 * pad) / ((maxLon - minLon) * k);
    const height = Math.round((maxLat - minLat) * scale + 2 * pad);
    state.project = ([lon, lat]) => [pad + (lon - minLon) * k * scale, pad + (maxLat - lat) * scale];
    $("map").setAttribute("viewBox", "0 0 " + width + " " + height);
  }

  function highlightCommune(name, on) {
    for (const p of document.querySelectorAll("#map-communes path")) {
      if (p.dataset.commune === name) p.classList.toggle("hl", on);
    }
  }

  async function loadMap() {
    try {
      const [outline, communes] = await Promise.all([
        getJSON("/api/v1/geo/outline.geojson"),
        getJSON("/api/v1/geo/communes.geojson"),
      ]);
      const feature = outline.type === "FeatureCollection" ? outline.features[0] : outline;
      setProjection(feature);
      const g = $("map-communes");
      for (const f of communes.features || []) {
        const p = svg("path", { d: pathData(f.geometry), class: "commune" });
        p.dataset.commune = f.properties.nom;
        const t = svg("title", {});
        t.textContent = f.properties.nom + " (" + f.properties.code + ")";
        p.append(t);
        g.append(p);
      }
      $("map-outline").append(svg("path", { d: pathData(feature.geometry), class: "outline" }));
    } catch (e) {
      $("map-note").textContent = "map outline unavailable: " + e;
    }
    renderLegend();
    await loadTwins();
    setInterval(loadTwins, MAP_REFRESH_MS);
  }

  function renderLegend() {
    const items = Object.entries(TYPE_COLORS).map(([type, color]) => {
      const i = el("span", "legend-item");
      const sw = el("span", "swatch");
      sw.style.background = color;
      i.append(sw, el("span", "", type));
      i.dataset.type = type;
      return i;
    });
    $("legend").replaceChildren(...items);
  }

  function valuesText(values) {
    if (!values) return "";
    return Object.entries(values).map(([k, v]) => k + " " + fmtValue(v)).join(" · ");
  }

  async function loadTwins() {
    let fc;
    try {
      fc = await getJSON("/api/v1/twins.geojson?limit=" + MAP_LIMIT);
    } catch (e) {
      $("map-note").textContent = "twins unavailable: " + e;
      return;
    }
    const g = $("map-twins");
    const existing = new Map();
    for (const c of g.children) existing.set(c.dataset.twin, c);
    const counts = {};
    const seen = new Set();
    for (const f of fc.features || []) {
      const p = f.properties || {};
      const id = p.id || f.id;
      if (!id || !f.geometry || !state.project) continue;
      seen.add(id);
      state.features.set(id, f);
      counts[p.type] = (counts[p.type] || 0) + 1;
      let c = existing.get(id);
      if (!c) {
        const [x, y] = state.project(f.geometry.coordinates);
        c = svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 6, class: "twin" });
        c.dataset.twin = id;
        c.setAttribute("fill", TYPE_COLORS[p.type] || "#888");
        c.append(svg("title", {}));
        g.append(c);
      }
      c.dataset.type = p.type;
      c.firstChild.textContent =
        id + " · " + p.type + " · " + p.district +
        "\nseq " + fmt(p.seq) + (p.observedAt ? " · observed " + p.observedAt : "") +
        (p.values && Object.keys(p.values).length ? "\n" + valuesText(p.values) : "\nno observation yet");
    }
    for (const [id, c] of existing) if (!seen.has(id)) { c.remove(); state.features.delete(id); }
    // Small fleets get big markers, large ones small dots.
    const r = seen.size > 2000 ? 1.6 : seen.size > 300 ? 3 : 6;
    g.dataset.size = String(r);
    for (const c of g.children) c.setAttribute("r", r);
    for (const i of $("legend").children) {
      const n = counts[i.dataset.type] || 0;
      i.classList.toggle("none", n === 0);
      i.lastChild.textContent = i.dataset.type + " (" + fmt(n) + ")";
    }
    const total = state.snapshot ? state.snapshot.twins : seen.size;
    $("map-note").textContent = total > seen.size
      ? "showing " + fmt(seen.size) + " of " + fmt(total) + " twins (capped at " + fmt(MAP_LIMIT) + ")"
      : fmt(seen.size) + " twins · refreshed every " + MAP_REFRESH_MS / 1000 + " s";
    $("map-note").classList.toggle("warn-text", total > seen.size);
    for (const path of state.expanded) renderSensors(path);
  }

  // ---------- data: one load, then live ----------

  // A first picture from plain requests, so the page shows the tree before the event
  // stream's first snapshot (and works where event streams are held back by a proxy).
  async function initialLoad() {
    try {
      const [sups, sinkActors, sinks] = await Promise.all([
        getJSON("/api/v1/actors?kind=supervisor&limit=10000"),
        getJSON("/api/v1/actors?kind=sink&limit=10000"),
        getJSON("/api/v1/sinks"),
      ]);
      if (state.live) return;
      // Keep tree order (parents before children): sinks after their supervisor.
      const actors = [];
      for (const s of sups.items) {
        actors.push(s);
        for (const k of sinkActors.items) if (k.parent === s.path) actors.push(k);
      }
      const supPaths = new Set(sups.items.map((s) => s.path));
      const sensorsByParent = sups.items
        .filter((s) => s.parent && s.children_total > 0 && !s.children.some((c) => supPaths.has(c)))
        .filter((s) => !sinkActors.items.some((k) => k.parent === s.path))
        .map((s) => ({ parent: s.path, sensors: s.children_total, running: null, restarts: null, queue_depth: null }))
        .sort((a, b) => (a.parent < b.parent ? -1 : a.parent > b.parent ? 1 : 0));
      applySnapshot({ actors, sensors_by_parent: sensorsByParent, sinks: sinks.items });
    } catch (e) {
      if (!state.live) $("tree-empty").textContent = "could not load the tree: " + e;
    }
  }

  function connect() {
    if (typeof EventSource === "undefined") {
      setConn("error", "no live updates (EventSource unsupported)");
      return;
    }
    const es = new EventSource("/api/v1/events");
    es.addEventListener("open", () => setConn("open", "live"));
    es.addEventListener("error", () => {
      // EventSource reconnects by itself unless the server refused it.
      setConn(es.readyState === EventSource.CLOSED ? "closed" : "error",
        es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
    });
    es.addEventListener("snapshot", (ev) => {
      let snap;
      try { snap = JSON.parse(ev.data); } catch (e) { return; }
      state.live = true;
      setConn("open", "live");
      applySnapshot(snap);
    });
    // Expanded districts: their sensors are fetched again with the map.
    setInterval(() => { for (const p of state.expanded) loadSensors(p); }, MAP_REFRESH_MS);
  }

  function start() {
    loadMap();
    initialLoad().finally(connect);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
