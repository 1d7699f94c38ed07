// netmix dashboard. Plain script, no build step, no dependency.
//
// Data arrives as whole Feed snapshots over /ws; the page renders the newest one on the next
// animation frame (so a burst of snapshots costs one render, and a hidden tab costs none).
// Every value from the engine is inserted with textContent, never as HTML: destinations and
// error messages come from the network.
"use strict";

(function () {
  const TOKEN_KEY = "netmix.dashboard.token";
  const CONNECTION_ROWS = 100; // rows shown; the feed may hold 1000
  const EVENT_ROWS = 200;
  const THROUGHPUT_WINDOW_MS = 5 * 60 * 1000;
  const STALL_MS = 5000; // server sends at least once a second
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const PALETTE = ["#2f6fde", "#1f9d55", "#d08a00", "#9b51e0", "#d13d3d", "#0f9bb3", "#7a5c3e", "#e05194"];

  const $ = (sel) => document.querySelector(sel);

  let latest = null;
  let renderScheduled = false;
  let selectTouched = false;
  let strategyKey = "";
  let engineStartedMs = 0; // the engine's start time as the feed first said it
  const throughput = new Map(); // name -> [{t, up, down}]
  const colors = new Map(); // name -> color, stable for the page's life

  // === formatting ===

  function fmtInt(n) {
    return Number(n).toLocaleString("en-US");
  }

  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? v + " B" : v.toFixed(v < 10 ? 2 : 1) + " " + units[i];
  }

  function fmtBits(bps) {
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let v = Number(bps);
    let i = 0;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return (i === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    return (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms)) + " ms";
  }

  function fmtPct(rate) {
    if (rate === null || rate === undefined) return "—";
    return (rate * 100).toFixed(rate >= 0.999 ? 0 : 1) + "%";
  }

  function fmtDuration(ms) {
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function fmtClock(unixMs) {
    const d = new Date(unixMs);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
  }

  function colorOf(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setField(root, field, text, raw) {
    const e = root.querySelector('[data-field="' + field + '"]');
    if (!e) return;
    if (e.textContent !== text) e.textContent = text;
    if (raw !== undefined) e.dataset.value = String(raw);
  }

  // === live feed ===

  let socket = null;
  let backoff = BACKOFF_MIN_MS;
  let lastMessage = 0;
  let everConnected = false;

  function setStatus(state) {
    const s = $("#ws-status");
    s.dataset.state = state;
    s.textContent = state;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws?connections=" + CONNECTION_ROWS * 10);
    socket = ws;
    ws.onopen = () => {
      backoff = BACKOFF_MIN_MS;
      everConnected = true;
      lastMessage = Date.now();
      setStatus("live");
    };
    ws.onmessage = (ev) => {
      lastMessage = Date.now();
      try {
        latest = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      noteEngineStart(latest.started_unix_ms);
      recordThroughput(latest);
      scheduleRender();
    };
    ws.onclose = () => {
      if (socket === ws) retry();
    };
  }

  // A feed whose engine start time differs from the one seen before: netmix restarted (its
  // counters and tables began again from zero). Feeds from older engines carry no start time.
  function noteEngineStart(startedMs) {
    if (!startedMs) return;
    if (engineStartedMs && startedMs !== engineStartedMs) {
      const m = $("#restart-marker");
      m.textContent = "netmix restarted at " + fmtClock(startedMs) + " — counters and tables start again from zero";
      m.title = new Date(startedMs).toString();
      m.dataset.startedUnixMs = String(startedMs);
      m.hidden = false;
    }
    engineStartedMs = startedMs;
  }

  function retry() {
    socket = null;
    setStatus(everConnected ? "reconnecting" : "connecting");
    const delay = backoff * (0.8 + Math.random() * 0.4);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, delay);
  }

  // A half-dead connection (engine frozen, laptop resumed) never fires onclose: watch for silence.
  setInterval(() => {
    if (socket && socket.readyState === WebSocket.OPEN && Date.now() - lastMessage > STALL_MS) {
      const dead = socket;
      socket = null;
      dead.onclose = null;
      dead.close();
      retry();
    }
  }, 1000);

  function recordThroughput(feed) {
    const now = Date.now();
    for (const i of feed.interfaces) {
      let series = throughput.get(i.name);
      if (!series) throughput.set(i.name, (series = []));
      series.push({ t: now, up: i.up_bps, down: i.down_bps });
      while (series.length && now - series[0].t > THROUGHPUT_WINDOW_MS) series.shift();
    }
    for (const [name, series] of throughput) {
      if (!series.length || now - series[series.length - 1].t > THROUGHPUT_WINDOW_MS) throughput.delete(name);
    }
  }

  function scheduleRender() {
    if (renderScheduled) return;
    renderScheduled = true;
    requestAnimationFrame(() => {
      renderScheduled = false;
      if (latest) render(latest);
    });
  }

  // === rendering ===

  function render(feed) {
    renderTotals(feed);
    renderStrategy(feed.strategy);
    renderInterfaces(feed.interfaces);
    renderZeroTier(feed.zerotier);
    renderThroughput();
    renderConnections(feed);
    renderEvents(feed.events);
  }

  function renderTotals(feed) {
    const root = $("#totals");
    const t = feed.totals;
    setField(root, "connections_open", fmtInt(t.connections_open), t.connections_open);
    setField(root, "connections_total", fmtInt(t.connections_total), t.connections_total);
    setField(root, "failovers", fmtInt(t.failovers), t.failovers);
    setField(root, "failed", fmtInt(t.failed), t.failed);
    setField(root, "plugin_errors", fmtInt(t.plugin_errors), t.plugin_errors);
    setField(root, "bytes_up", fmtBytes(t.bytes_up), t.bytes_up);
    setField(root, "bytes_down", fmtBytes(t.bytes_down), t.bytes_down);
    setField(root, "uptime", fmtDuration(feed.uptime_ms), feed.uptime_ms);
  }

  function renderStrategy(s) {
    $("#strategy-active").textContent = s.active || "—";
    $("#strategy-fallback").hidden = !s.fallback_active;
    const err = $("#strategy-error");
    err.hidden = !s.last_error;
    err.textContent = s.last_error ? "last error: " + s.last_error : "";

    const select = $("#strategy-select");
    const key = s.available.map((a) => a.name + "\u0000" + a.source).join("\u0001");
    if (key !== strategyKey) {
      strategyKey = key;
      const keep = selectTouched ? select.value : s.active;
      select.replaceChildren(
        ...s.available.map((a) => {
          const o = el("option", "", a.name + (a.source === "built-in" ? "" : "  (plugin)"));
          o.value = a.name;
          o.dataset.description = a.description;
          o.dataset.source = a.source;
          return o;
        }),
      );
      select.value = keep;
    }
    if (!selectTouched && select.value !== s.active) select.value = s.active;
    describeSelected();
  }

  function describeSelected() {
    const o = $("#strategy-select").selectedOptions[0];
    $("#strategy-description").textContent = o ? o.dataset.description + " — " + o.dataset.source : "";
  }

  // What a card's less obvious numbers count (the header's "failed connections" is another thing).
  const CARD_HINTS = {
    "link failures":
      "connects and probes through this interface that failed on the link's side and count against its health; " +
      "a timeout counts only when another interface then reached the destination (not the header's failed connections)",
  };

  function makeCard(name) {
    const card = el("article", "iface-card");
    card.dataset.name = name;
    const head = el("header");
    head.append(el("span", "iface-name", name), el("span", "iface-kind"), el("span", "badge"));
    head.children[2].dataset.field = "health";
    head.children[1].dataset.field = "kind";
    const addrs = el("div", "iface-addrs");
    addrs.dataset.field = "addrs";
    const stats = el("dl", "iface-stats");
    // Each entry: label, then the fields shown in that cell (joined by " · ").
    const cells = [
      ["latency", "latency_ms"],
      ["jitter", "jitter_ms"],
      ["success", "success_rate"],
      ["active", "active"],
      ["↓ download", "down_bps", "bytes_down"],
      ["↑ upload", "up_bps", "bytes_up"],
      ["capacity", "peak_down_bps"],
      ["link failures", "failures"],
      ["ejections", "ejections"],
      ["weight", "weight"],
      ["metered", "metered"],
    ];
    for (const [label, ...fields] of cells) {
      const d = el("div", fields.length > 1 ? "wide" : CARD_HINTS[label] ? "span2" : "");
      const dd = el("dd");
      fields.forEach((field, k) => {
        if (k) dd.append(el("span", "sep", " · "));
        const v = el("span");
        v.dataset.field = field;
        dd.append(v);
      });
      const dt = el("dt", "", label);
      if (CARD_HINTS[label]) dt.title = CARD_HINTS[label];
      d.append(dt, dd);
      stats.append(d);
    }
    const canvas = el("canvas", "latency-chart");
    canvas.setAttribute("aria-label", "latency of " + name);
    card.append(head, addrs, stats, canvas);
    return card;
  }

  function renderInterfaces(list) {
    const root = $("#interfaces");
    $("#no-interfaces").hidden = list.length > 0;
    $("#interfaces-count").textContent = list.length ? list.length + " known" : "";
    const existing = new Map();
    for (const c of root.children) existing.set(c.dataset.name, c);
    const wanted = new Set(list.map((i) => i.name));
    for (const [name, card] of existing) if (!wanted.has(name)) card.remove();

    list.forEach((i, idx) => {
      let card = existing.get(i.name);
      if (!card) card = makeCard(i.name);
      if (root.children[idx] !== card) root.insertBefore(card, root.children[idx] || null);
      card.dataset.health = i.health;
      card.dataset.kind = i.kind;
      const badge = card.querySelector('[data-field="health"]');
      badge.className = "badge badge-" + i.health;
      setField(card, "health", i.health + (i.link_up ? "" : " · no link"));
      setField(card, "kind", i.kind);
      setField(card, "addrs", i.addrs.join("  ") || "no address");
      card.querySelector('[data-field="addrs"]').title = i.addrs.join("\n");
      setField(card, "latency_ms", fmtMs(i.latency_ms), i.latency_ms === null ? "" : i.latency_ms);
      // No jitter either before the first latency sample.
      const jitter = i.latency_ms === null ? null : i.jitter_ms;
      setField(card, "jitter_ms", fmtMs(jitter), jitter === null ? "" : jitter);
      setField(card, "success_rate", fmtPct(i.success_rate), i.success_rate === null ? "" : i.success_rate);
      setField(card, "active", String(i.active), i.active);
      setField(card, "down_bps", fmtBits(i.down_bps), i.down_bps);
      setField(card, "up_bps", fmtBits(i.up_bps), i.up_bps);
      setField(card, "peak_down_bps", i.peak_down_bps ? fmtBits(i.peak_down_bps) : "—", i.peak_down_bps);
      setField(card, "bytes_down", fmtBytes(i.bytes_down), i.bytes_down);
      setField(card, "bytes_up", fmtBytes(i.bytes_up), i.bytes_up);
      setField(card, "failures", fmtInt(i.failures), i.failures);
      setField(card, "ejections", fmtInt(i.ejections), i.ejections);
      setField(card, "weight", String(i.weight), i.weight);
      setField(card, "metered", i.metered ? "yes" : "no", i.metered);
      drawLatency(card.querySelector("canvas"), i);
    });
  }

  // === charts ===

  function prepareCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function gridAndLabels(ctx, w, h, pad, top, label) {
    ctx.strokeStyle = "#eceef2";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#8a93a3";
    ctx.font = "10px " + getComputedStyle(document.body).getPropertyValue("--mono");
    for (const f of [0, 0.5, 1]) {
      const y = pad.t + (h - pad.t - pad.b) * (1 - f);
      ctx.beginPath();
      ctx.moveTo(pad.l, Math.round(y) + 0.5);
      ctx.lineTo(w - pad.r, Math.round(y) + 0.5);
      ctx.stroke();
      if (f > 0) ctx.fillText(label(top * f), pad.l + 2, y + 10);
    }
  }

  function drawLatency(canvas, iface) {
    const { ctx, w, h } = prepareCanvas(canvas);
    const pad = { l: 0, r: 0, t: 4, b: 2 };
    const pts = iface.latency_history || [];
    const span = Math.max(60000, ...pts.map((p) => p.age_ms));
    const top = niceMax(Math.max(...pts.map((p) => p.ms), 1) * 1.1);
    gridAndLabels(ctx, w, h, pad, top, (v) => fmtMs(v));
    if (!pts.length) {
      ctx.fillStyle = "#8a93a3";
      ctx.fillText("no samples yet", w / 2 - 36, h / 2 + 4);
      return;
    }
    const x = (age) => pad.l + (w - pad.l - pad.r) * (1 - age / span);
    const y = (ms) => pad.t + (h - pad.t - pad.b) * (1 - ms / top);
    const color = iface.health === "down" ? "#d13d3d" : iface.health === "degraded" ? "#d08a00" : colorOf(iface.name);
    ctx.beginPath();
    pts.forEach((p, k) => (k ? ctx.lineTo(x(p.age_ms), y(p.ms)) : ctx.moveTo(x(p.age_ms), y(p.ms))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineTo(x(pts[pts.length - 1].age_ms), h - pad.b);
    ctx.lineTo(x(pts[0].age_ms), h - pad.b);
    ctx.closePath();
    ctx.globalAlpha = 0.08;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }

  function renderThroughput() {
    const canvas = $("#throughput-chart");
    const { ctx, w, h } = prepareCanvas(canvas);
    const pad = { l: 0, r: 0, t: 6, b: 4 };
    const now = Date.now();
    let max = 1;
    for (const s of throughput.values()) for (const p of s) max = Math.max(max, p.up, p.down);
    const top = niceMax(max * 1.1);
    gridAndLabels(ctx, w, h, pad, top, fmtBits);
    const x = (t) => pad.l + (w - pad.l - pad.r) * (1 - (now - t) / THROUGHPUT_WINDOW_MS);
    const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / top);
    const legend = [];
    for (const [name, s] of throughput) {
      const color = colorOf(name);
      for (const dir of ["down", "up"]) {
        ctx.beginPath();
        s.forEach((p, k) => (k ? ctx.lineTo(x(p.t), y(p[dir])) : ctx.moveTo(x(p.t), y(p[dir]))));
        ctx.setLineDash(dir === "up" ? [4, 3] : []);
        ctx.strokeStyle = color;
        ctx.lineWidth = dir === "up" ? 1.2 : 1.8;
        ctx.stroke();
      }
      if (s.length === 1) {
        ctx.fillStyle = color;
        ctx.fillRect(x(s[0].t) - 3, y(s[0].down) - 1.5, 3, 3);
      }
      const lastPoint = s[s.length - 1];
      legend.push([name, color, lastPoint]);
    }
    ctx.setLineDash([]);
    const root = $("#throughput-legend");
    root.replaceChildren(
      ...legend.map(([name, color, p]) => {
        const item = el("span");
        const sw = el("span", "swatch");
        sw.style.background = color;
        item.append(sw, document.createTextNode(name + "  ↓ " + fmtBits(p.down) + "  ↑ " + fmtBits(p.up)));
        return item;
      }),
    );
  }

  // === connections and events ===

  // Short names for ConnectionDto.protocol; an unknown one is shown as it comes.
  const PROTOCOL_LABELS = new Map([
    ["socks5", "SOCKS5"],
    ["socks4", "SOCKS4"],
    ["http-connect", "HTTP CONNECT"],
    ["http-forward", "HTTP"],
    ["socks5-udp", "UDP"],
    ["socks5-bind", "BIND"],
  ]);
  const protocolLabel = (p) => PROTOCOL_LABELS.get(p) || p || "—";

  // The interface column: the one that carried it, or for a failed connection every interface
  // tried ("—" when none could even try).
  function interfaceText(c) {
    if (c.interface) return c.interface;
    const tried = c.tried || [];
    return tried.length ? "tried " + tried.join(", ") : "—";
  }

  // Retries, with the interfaces that failed before the one that carried it.
  function retriesText(c) {
    const tried = c.tried || [];
    return c.interface && tried.length ? c.retries + " (" + tried.join(", ") + ")" : String(c.retries);
  }

  function renderConnections(feed) {
    const filter = $("#connections-filter").value.trim().toLowerCase();
    let rows = feed.connections;
    if (filter) {
      rows = rows.filter((c) =>
        [c.client, protocolLabel(c.protocol), c.destination, c.interface || "", (c.tried || []).join(" "), c.strategy, c.reason, c.state, c.error || ""].some((v) =>
          v.toLowerCase().includes(filter),
        ),
      );
    }
    const shown = rows.slice(0, CONNECTION_ROWS);
    $("#connections-count").textContent =
      "newest " + shown.length + " of " + fmtInt(feed.totals.connections_total) + " · " + fmtInt(feed.totals.connections_open) + " open";
    const empty = $("#no-connections");
    empty.hidden = shown.length > 0;
    const emptyText = feed.connections.length ? "No connection matches the filter." : "No connections yet.";
    if (empty.textContent !== emptyText) empty.textContent = emptyText;
    const body = $("#connections tbody");
    body.replaceChildren(
      ...shown.map((c) => {
        const tr = el("tr");
        tr.dataset.id = String(c.id);
        tr.dataset.state = c.state;
        const cells = [
          [c.client],
          [protocolLabel(c.protocol), "protocol"],
          [c.destination],
          [interfaceText(c), c.interface ? "" : "tried"],
          [c.strategy],
          [c.reason, "reason"],
          [c.state, "state"],
          [c.error || "", "error"],
          [fmtBytes(c.bytes_up), "num"],
          [fmtBytes(c.bytes_down), "num"],
          [fmtDuration(c.duration_ms), "num duration"],
          [retriesText(c), "num"],
        ];
        for (const [text, cls] of cells) {
          const td = el("td", cls, text);
          if (!cls || cls === "reason" || cls === "tried" || cls === "error") td.title = text;
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  // The ZeroTier agent's view: service health, networks with their routes, peers.
  function renderZeroTier(zt) {
    const panel = $("#zerotier");
    panel.hidden = !zt;
    if (!zt) return;
    panel.dataset.service = zt.service;
    // Not installed is no error: one line, no empty tables.
    const absent = zt.service === "not_installed";
    $("#zerotier-title").hidden = absent;
    $("#zerotier-details").hidden = absent;
    const service = $("#zerotier-service");
    service.classList.toggle("error-text", !absent && zt.service !== "ok" && zt.service !== "starting");
    if (absent) {
      service.textContent = "ZeroTier not installed";
      return;
    }
    const health = zt.service === "ok"
      ? "v" + zt.version + " · " + (zt.online ? "online" : "OFFLINE") + (zt.tcp_fallback ? " · TCP fallback (slow)" : "")
      : zt.service + (zt.error ? ": " + zt.error : "");
    service.textContent = health;
    const cell = (text) => el("td", "", text);
    $("#no-zerotier-networks").hidden = zt.networks.length > 0;
    $("#no-zerotier-peers").hidden = zt.peers.length > 0;
    $("#zerotier-networks").replaceChildren(
      ...zt.networks.map((n) => {
        const tr = el("tr");
        const routes = n.routes
          .map((r) => (r.usable ? "✓ " : "✗ ") + r.target + (r.via ? " via " + r.via : "") + (r.note ? " (" + r.note + ")" : ""))
          .join("; ");
        tr.append(cell(n.id), cell(n.name), cell(n.status), cell(n.device), cell(n.assigned.join(", ")), cell(routes));
        return tr;
      }),
    );
    $("#zerotier-peers").replaceChildren(
      ...zt.peers.map((p) => {
        const tr = el("tr");
        tr.dataset.path = p.path;
        tr.append(cell(p.address), cell(p.role), cell(p.latency_ms == null ? "?" : p.latency_ms + " ms"), cell(p.path), cell(p.version));
        return tr;
      }),
    );
  }

  function renderEvents(events) {
    const shown = events.slice(0, EVENT_ROWS);
    $("#events-count").textContent = events.length ? "newest " + shown.length + " of " + events.length : "";
    $("#no-events").hidden = events.length > 0;
    $("#events").replaceChildren(
      ...shown.map((e) => {
        const li = el("li");
        li.dataset.kind = e.kind;
        if (e.interface) li.dataset.interface = e.interface;
        const t = el("time", "", fmtClock(e.unix_ms));
        t.dateTime = new Date(e.unix_ms).toISOString();
        li.append(t, el("span", "kind", e.kind), el("span", "msg", e.message));
        return li;
      }),
    );
  }

  // === strategy switch ===

  function storedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch (err) {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      /* private mode: ask again next time */
    }
    showTokenState();
  }

  function showTokenState() {
    const has = storedToken() !== "";
    $("#token-input").hidden = has;
    $("#token-forget").hidden = !has;
  }

  function say(text, kind) {
    const m = $("#strategy-message");
    m.textContent = text;
    m.dataset.kind = kind || "";
  }

  async function applyStrategy(ev) {
    ev.preventDefault();
    const input = $("#token-input");
    const typed = input.value.trim();
    const token = typed || storedToken();
    if (!token) {
      input.hidden = false;
      input.focus();
      say("enter the dashboard token first (see netmix's startup log for its file)", "error");
      return;
    }
    const name = $("#strategy-select").value;
    const button = $("#strategy-apply");
    button.disabled = true;
    say("switching to " + name + "…");
    try {
      const res = await fetch("/api/strategy", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
        body: JSON.stringify({ name }),
      });
      let body = {};
      try {
        body = await res.json();
      } catch (err) {
        /* non-JSON error page */
      }
      if (res.status === 401) {
        storeToken("");
        input.value = "";
        input.hidden = false;
        input.focus();
        say("token refused: " + (body.error || "unauthorized"), "error");
        return;
      }
      storeToken(token); // the token was accepted, whatever the outcome
      input.value = "";
      if (!res.ok) {
        say(body.error || res.status + " " + res.statusText, "error");
        return;
      }
      selectTouched = false;
      say("now using " + body.active, "ok");
      if (latest) {
        latest.strategy = body;
        scheduleRender();
      }
    } catch (err) {
      say("request failed: " + err.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  // === start ===

  document.addEventListener("DOMContentLoaded", () => {
    $("#strategy-form").addEventListener("submit", applyStrategy);
    $("#strategy-select").addEventListener("change", () => {
      selectTouched = true;
      describeSelected();
    });
    $("#token-forget").addEventListener("click", () => {
      storeToken("");
      say("token forgotten");
    });
    $("#connections-filter").addEventListener("input", scheduleRender);
    window.addEventListener("resize", scheduleRender);
    showTokenState();
    connect();
  });
})();
