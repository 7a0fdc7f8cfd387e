// The hacontrol dashboard: read-only, live over Server-Sent Events, polling /status
// when the stream is not delivering. Everything it shows comes from this controller.
"use strict";

(function () {
  const MAX_EVENTS = 200;
  const HISTORY_URL = "/history?limit=" + MAX_EVENTS;
  const STREAM_URL = "/dashboard/stream";
  const POLL_MS = 1000;
  // No update from the stream for this long: poll /status until it delivers again.
  const STALE_MS = 3000;
  const LATENCY_WINDOW_S = 60;
  // Full bars: 16 MiB of lag, 60 s of replay delay.
  const LAG_FULL_BYTES = 16 * 1024 * 1024;
  const REPLAY_FULL_S = 60;
  const STEPS = ["detected", "confirmed", "promoted", "repointed", "fenced"];

  const model = {
    status: null,
    records: new Map(),
    latency: {},
    polled: {},          // node -> [[wall ms, ms|null]] gathered while polling
    lastStream: 0,
    streamAt: 0,         // the controller's time of the last stream update applied
    controller: null,    // which controller process the records come from
    generation: 0,       // bumped when the records are thrown away
    polling: false,
    source: null,
    primary: undefined,
    updates: 0,
  };

  const byId = (id) => document.getElementById(id);

  function show(el, value) {
    el.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Number(n);
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    return Number(s) < 10 ? Number(s).toFixed(2) + " s" : Number(s).toFixed(0) + " s";
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : (Number(rate) * 100).toFixed(0) + "%";
  }

  function clock(ts) {
    const d = new Date(Number(ts) * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." +
      String(d.getMilliseconds()).padStart(3, "0");
  }

  function setConnection(state, label) {
    const el = byId("connection");
    if (el.dataset.state !== state) el.dataset.state = state;
    el.textContent = label;
  }

  // ---------------------------------------------------------------- records

  function recordKey(r) {
    return r.seq !== undefined && r.seq !== null ? "s" + r.seq : r.ts + "|" + r.kind + "|" + r.node;
  }

  function addRecords(list) {
    for (const r of list || []) {
      if (r && r.kind && r.kind !== "journal_snapshot") model.records.set(recordKey(r), r);
    }
    if (model.records.size > MAX_EVENTS * 2) {
      const sorted = orderedRecords();
      model.records = new Map(sorted.slice(-MAX_EVENTS).map((r) => [recordKey(r), r]));
    }
  }

  // One journal numbers its records in order (across restarts too): that order,
  // not the wall clock, which may step.
  function orderedRecords() {
    return Array.from(model.records.values()).sort((a, b) => {
      const bySeq = Number.isInteger(a.seq) && Number.isInteger(b.seq) ? a.seq - b.seq : 0;
      return bySeq || (Number(a.ts) - Number(b.ts));
    });
  }

  // Merged into what the stream already brought, never in place of it.
  async function loadHistory() {
    const generation = model.generation;
    try {
      const response = await fetch(HISTORY_URL, { cache: "no-store" });
      if (!response.ok) return;
      const body = await response.json();
      if (generation !== model.generation) return;  // from before a controller change
      addRecords(body.events);
      render();
    } catch (err) {
      // The stream or the next poll brings the records; nothing to report twice.
    }
  }

  // Records of another controller process (a restart, or another controller behind
  // the same address) are not mixed with the ones held: start over from its history.
  function sameController(status) {
    const c = status && status.controller;
    const identity = c ? c.pid + "@" + c.started_at : null;
    if (identity === model.controller) return true;
    const first = model.controller === null;
    model.controller = identity;
    if (!first) {
      model.generation += 1;
      model.records = new Map();
      model.polled = {};
      loadHistory();
    }
    return first;
  }

  function severityOf(r) {
    if (r.severity) return String(r.severity);
    if (r.kind === "action_finished") return r.status === "succeeded" ? "info" : "warning";
    return "info";
  }

  function describe(r) {
    if (r.message) return String(r.message);
    if (r.kind === "action_finished") {
      return r.action + " " + (r.node || "") + ": " + r.status + (r.detail ? " (" + r.detail + ")" : "");
    }
    if (r.kind === "action_started") return r.action + " " + (r.node || "") + (r.reason ? ": " + r.reason : "");
    return "";
  }

  // ---------------------------------------------------------------- failover steps

  // The latest failover: the newest failover_started (automatic or manual), with
  // the detection and confirmation before it; or a newer detection still open.
  function failoverSteps(records) {
    let started = -1;
    let failed = -1;
    for (let i = records.length - 1; i >= 0 && (started < 0 || failed < 0); i -= 1) {
      if (started < 0 && records[i].kind === "failover_started") started = i;
      if (failed < 0 && records[i].kind === "primary_failed") failed = i;
    }
    if (failed > started) {
      const node = records[failed].node;
      const recovered = records.slice(failed + 1).some(
        (r) => r.kind === "primary_recovered" && r.node === node);
      if (!recovered || started < 0) return openDetection(records, failed, recovered);
    }
    return started < 0 ? null : fromStart(records, started);
  }

  function openDetection(records, index, recovered) {
    const first = records[index];
    const at = { detected: Number(first.ts) };
    const confirmed = records.slice(index + 1).find(
      (r) => r.kind === "failure_confirmed" && r.node === first.node);
    if (confirmed) at.confirmed = Number(confirmed.ts);
    return { old: first.node, at: at, start: Number(first.ts), promoted: null, repointed: 0,
             failed: null, recovered: recovered, manual: false };
  }

  function fromStart(records, index) {
    const start = records[index];
    const details = start.details || {};
    const old = details.old_primary || null;
    const manual = details.operation === "manual_failover";
    const at = {};
    let from = index;
    for (let i = index - 1; i >= 0 && !manual; i -= 1) {
      const r = records[i];
      if (r.kind === "failover_started") break;
      if (r.kind === "primary_failed" && r.node === old) { from = i; at.detected = Number(r.ts); break; }
    }
    for (const r of records.slice(from, index)) {
      if (r.kind === "failure_confirmed" && r.node === old && at.confirmed === undefined) at.confirmed = Number(r.ts);
    }
    const result = { old: old, at: at, start: Number(start.ts), promoted: null, repointed: 0,
                     failed: null, recovered: false, manual: manual };
    if (manual) { at.detected = Number(start.ts); at.confirmed = Number(start.ts); }
    for (const r of records.slice(from)) {
      const ts = Number(r.ts);
      if ((r.kind === "promote_succeeded" || r.kind === "failover_completed") && r.node === start.node && at.promoted === undefined) {
        at.promoted = ts;
        result.promoted = r.node;
      }
      // The repoints of this failover: those within a minute of its start.
      if (r.kind === "action_finished" && r.action === "Repoint" && r.status === "succeeded" &&
          ts >= result.start && ts - result.start < 60) {
        if (at.repointed === undefined) at.repointed = ts;
        result.repointed += 1;
      }
      const fencedOld = old !== null && r.node === old && (
        r.kind === "old_primary_fenced" || r.kind === "node_fenced" ||
        (r.kind === "action_finished" && r.action === "Fence" && r.status === "succeeded"));
      if (fencedOld && at.fenced === undefined) at.fenced = ts;
      if ((r.kind === "failover_failed" || r.kind === "failover_abandoned") && at.promoted === undefined) result.failed = r;
    }
    return result;
  }

  function renderSteps(records) {
    const steps = failoverSteps(records);
    const summary = byId("failover-summary");
    const items = byId("steps").querySelectorAll("li");
    for (const li of items) {
      const name = li.dataset.step;
      const when = steps ? steps.at[name] : undefined;
      let done = when !== undefined ? "yes" : "no";
      if (done === "no" && steps && steps.failed && name === "promoted") done = "failed";
      li.dataset.done = done;
      const label = li.querySelector(".step-at");
      const origin = steps && steps.at.detected !== undefined ? steps.at.detected : (steps ? steps.start : 0);
      label.textContent = when === undefined ? "" :
        (name === "detected" ? clock(when) + (steps.manual ? " (manual)" : "") :
          "+" + (when - origin).toFixed(2) + " s");
      if (name === "repointed" && steps && steps.repointed > 1) label.textContent += " ×" + steps.repointed;
    }
    if (!steps) {
      summary.textContent = "none in the recent history";
    } else if (steps.promoted) {
      summary.textContent = (steps.old || "?") + " → " + steps.promoted + (steps.manual ? " (manual)" : "");
    } else if (steps.failed) {
      summary.textContent = steps.old + ": " + steps.failed.kind.replace(/_/g, " ");
    } else if (steps.recovered) {
      summary.textContent = steps.old + " recovered; no failover";
    } else {
      summary.textContent = steps.old + " failed; in progress";
    }
  }

  // ---------------------------------------------------------------- cluster

  function renderCluster(s) {
    const nodes = s.nodes || [];
    const primary = nodes.find((n) => n.name === s.primary);
    show(byId("primary"), s.primary || "none");
    show(byId("timeline"), primary ? primary.timeline : null);
    show(byId("mode"), s.mode);
    let runState = "watching";
    if (s.paused) runState = "PAUSED";
    else if (s.failover_in_flight) runState = "failing over";
    else if (s.failover_blocked) runState = "BLOCKED";
    show(byId("run-state"), runState);
    show(byId("maintenance"), (s.maintenance || []).join(", ") || "none");
    show(byId("round"), s.rounds !== undefined ? "#" + s.rounds + " · " + s.last_round_ms + " ms" : null);
    document.body.dataset.primary = s.primary || "";
    if (model.primary !== undefined && model.primary !== (s.primary || null)) {
      document.body.dataset.primaryChangedAt = String(Date.now());
    }
    model.primary = s.primary || null;

    const blocked = s.failover_blocked;
    byId("blocked").hidden = !blocked;
    if (blocked) {
      show(byId("blocked-reason"), blocked.reason);
      show(byId("blocked-message"), blocked.message);
      show(byId("blocked-way-out"), blocked.way_out);
    }
    byId("in-flight").hidden = !s.failover_in_flight;
    show(byId("in-flight-node"), s.failover_in_flight);
    byId("paused").hidden = !s.paused;
    document.body.dataset.paused = s.paused ? "yes" : "no";
    document.body.dataset.blocked = blocked ? blocked.reason : "";
  }

  // ---------------------------------------------------------------- nodes

  function cardFor(container, name) {
    let card = container.querySelector('article[data-node="' + CSS.escape(name) + '"]');
    if (!card) {
      card = byId("node-card").content.firstElementChild.cloneNode(true);
      card.dataset.node = name;
      card.querySelector(".node-name").textContent = name;
      container.appendChild(card);
    }
    return card;
  }

  function bar(fill, value, full) {
    const ratio = value === null || value === undefined ? 0 : Math.min(1, Number(value) / full);
    fill.style.width = (ratio * 100).toFixed(1) + "%";
    fill.dataset.level = ratio >= 0.75 ? "bad" : ratio >= 0.25 ? "warn" : "ok";
  }

  function flag(container, label, info) {
    const el = document.createElement("span");
    el.className = info ? "flag flag-info" : "flag";
    el.textContent = label;
    container.appendChild(el);
  }

  function renderNode(card, n) {
    card.dataset.role = n.role;
    card.dataset.health = n.health;
    const role = card.querySelector(".role");
    role.dataset.role = n.role;
    role.textContent = n.role;
    card.querySelector(".health").textContent = n.health;
    const flags = card.querySelector(".flags");
    flags.replaceChildren();
    if (!n.reachable) flag(flags, "unreachable");
    if (n.fenced) flag(flags, "fenced");
    if (n.read_only) flag(flags, "read-only");
    if (n.maintenance) flag(flags, "maintenance", true);
    show(card.querySelector(".f-timeline"), n.timeline);
    show(card.querySelector(".f-lsn"), n.lsn);
    show(card.querySelector(".f-receiver"), n.role === "replica" ? n.receiver_status : (n.role === "primary" ? "—" : null));
    show(card.querySelector(".f-probe"), n.probe_ms !== null && n.probe_ms !== undefined ? n.probe_ms + " ms" : null);
    bar(card.querySelector(".f-lag-bar"), n.lag_bytes, LAG_FULL_BYTES);
    show(card.querySelector(".f-lag"), n.role === "replica" ? bytes(n.lag_bytes) : null);
    bar(card.querySelector(".f-replay-bar"), n.replay_lag_s, REPLAY_FULL_S);
    show(card.querySelector(".f-replay"), n.role === "replica" ? seconds(n.replay_lag_s) : null);
    const error = card.querySelector(".error");
    error.hidden = !n.error;
    error.textContent = n.error || "";
    renderResilience(card, n);
    renderSlots(card, n.slots || []);
  }

  function renderResilience(card, n) {
    const r = n.resilience;
    const breaker = card.querySelector(".breaker");
    const state = r ? r.breaker : (n.breaker || "unknown");
    breaker.dataset.state = state;
    breaker.textContent = state.replace("_", "-");
    show(card.querySelector(".r-failure"), r ? percent(r.failure_rate) + " of " + r.window_calls : null);
    show(card.querySelector(".r-slow"), r ? percent(r.slow_call_rate) : null);
    show(card.querySelector(".r-bulkhead"), r ? r.bulkhead_active + "/" + r.bulkhead_max + " in use, " + r.bulkhead_queued + " queued" : null);
    show(card.querySelector(".r-trips"), r ? r.trips : null);
    renderSpark(card, latencyOf(n.name));
  }

  function latencyOf(name) {
    const streamed = model.latency[name];
    if (Array.isArray(streamed) && Date.now() - model.lastStream < STALE_MS) return streamed;
    const now = Date.now();
    return (model.polled[name] || []).map((p) => [(now - p[0]) / 1000, p[1]]);
  }

  function renderSpark(card, points) {
    const svg = card.querySelector(".spark");
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const values = points.filter((p) => p[1] !== null).map((p) => p[1]);
    const max = values.length ? Math.max(1, ...values) : 1;
    const x = (ago) => 120 * (1 - Math.min(LATENCY_WINDOW_S, Math.max(0, ago)) / LATENCY_WINDOW_S);
    const y = (ms) => 29 - 27 * (ms / max);
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const line = document.createElementNS(ns, "polyline");
        line.setAttribute("points", run.join(" "));
        svg.appendChild(line);
      }
      run = [];
    };
    for (const [ago, ms] of points) {
      if (ms === null) {
        flush();
        const tick = document.createElementNS(ns, "line");
        tick.setAttribute("x1", x(ago).toFixed(2));
        tick.setAttribute("x2", x(ago).toFixed(2));
        tick.setAttribute("y1", "2");
        tick.setAttribute("y2", "29");
        svg.appendChild(tick);
      } else {
        run.push(x(ago).toFixed(2) + "," + y(ms).toFixed(2));
      }
    }
    flush();
    card.querySelector(".r-spark-max").textContent = values.length ? "max " + max.toFixed(1) + " ms" : "";
  }

  function renderSlots(card, slots) {
    const list = card.querySelector(".slots");
    list.replaceChildren();
    for (const slot of slots) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = slot.name + " (" + slot.kind + (slot.active ? ", active" : "") + ")";
      const kept = document.createElement("span");
      kept.textContent = bytes(slot.retained_bytes);
      li.append(name, kept);
      list.appendChild(li);
    }
  }

  function renderNodes(s) {
    const container = byId("nodes");
    const names = new Set();
    for (const n of s.nodes || []) {
      names.add(n.name);
      renderNode(cardFor(container, n.name), n);
    }
    for (const card of Array.from(container.querySelectorAll("article"))) {
      if (!names.has(card.dataset.node)) card.remove();
    }
  }

  // ---------------------------------------------------------------- controllers, events

  function renderControllers(s) {
    const section = byId("controllers");
    const c = s.controllers;
    section.hidden = !c;
    if (!c) return;
    const body = byId("controller-rows");
    body.replaceChildren();
    for (const m of c.members || []) {
      const tr = document.createElement("tr");
      tr.dataset.role = m.role;
      for (const value of [m.name, m.role, m.epoch, m.last_seen_s === null ? null : m.last_seen_s + " s"]) {
        const td = document.createElement("td");
        show(td, value);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    show(byId("dcs"), (c.dcs_up ? "etcd up" : "etcd UNREACHABLE") + (c.dcs ? " · " + c.dcs : ""));
  }

  function renderEvents(records) {
    const list = byId("events");
    list.replaceChildren();
    for (const r of records.slice(-MAX_EVENTS).reverse()) {
      if (r.kind === "action_started") continue;
      const li = document.createElement("li");
      li.dataset.severity = severityOf(r);
      li.dataset.kind = r.kind;
      const head = document.createElement("div");
      head.className = "event-head";
      const at = document.createElement("span");
      at.className = "muted";
      at.textContent = clock(r.ts);
      const kind = document.createElement("span");
      kind.className = "event-kind";
      kind.textContent = r.kind === "action_finished" ? String(r.action).toLowerCase() : r.kind;
      head.append(at, kind);
      if (r.node) {
        const node = document.createElement("span");
        node.className = "pill";
        node.textContent = r.node;
        head.appendChild(node);
      }
      const body = document.createElement("div");
      body.className = "event-text";
      body.textContent = describe(r);
      li.append(head, body);
      list.appendChild(li);
    }
  }

  function render() {
    if (!model.status) return;
    const records = orderedRecords();
    renderCluster(model.status);
    renderNodes(model.status);
    renderSteps(records);
    renderControllers(model.status);
    renderEvents(records);
    model.updates += 1;
    document.body.dataset.updates = String(model.updates);
  }

  // ---------------------------------------------------------------- feeds

  function connect() {
    if (!window.EventSource) return;
    if (model.source) model.source.close();
    const source = new EventSource(STREAM_URL);
    model.source = source;
    source.addEventListener("hello", () => {
      // A new stream may come from a restarted controller: take its history afresh.
      loadHistory();
    });
    source.addEventListener("update", (event) => {
      const data = JSON.parse(event.data);
      // A burst a proxy held back brings nothing newer than what is shown.
      const same = sameController(data.status);
      if (same && Number(data.at) < model.streamAt) return;
      model.streamAt = Number(data.at);
      model.status = data.status;
      model.latency = {};
      for (const entry of Array.isArray(data.latency) ? data.latency : []) {
        if (entry && Array.isArray(entry.points)) model.latency[entry.node] = entry.points;
      }
      addRecords(data.records);
      if (data.gap) loadHistory();  // fell behind: records were dropped meanwhile
      model.lastStream = Date.now();
      setConnection("live", "live");
      render();
    });
    source.addEventListener("error", () => {
      // The browser retries by itself unless the stream was refused outright.
      if (source.readyState === EventSource.CLOSED) {
        model.source = null;
        setTimeout(connect, POLL_MS);
      }
    });
  }

  // One poll at a time, each bounded: a hung controller must not pile requests up
  // (they would take the connections the stream needs to come back).
  async function poll() {
    if (model.polling || Date.now() - model.lastStream < STALE_MS) return;
    model.polling = true;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 2 * POLL_MS);
    const asked = Date.now();
    try {
      const response = await fetch("/status", { cache: "no-store", signal: abort.signal });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const status = await response.json();
      if (model.lastStream > asked) return;  // the stream came back meanwhile
      sameController(status);
      model.status = status;
      addRecords(status.events);
      const now = Date.now();
      for (const n of status.nodes || []) {
        const samples = model.polled[n.name] || (model.polled[n.name] = []);
        samples.push([now, n.reachable ? n.probe_ms : null]);
        while (samples.length && now - samples[0][0] > LATENCY_WINDOW_S * 1000) samples.shift();
      }
      setConnection("polling", "polling /status");
      render();
    } catch (err) {
      setConnection("down", "controller unreachable; retrying");
    } finally {
      clearTimeout(timer);
      model.polling = false;
    }
  }

  loadHistory();
  connect();
  setInterval(poll, POLL_MS);
})();
