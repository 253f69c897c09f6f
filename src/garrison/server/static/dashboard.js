// garrison operators' dashboard: polls /dashboard/data with the admin key and draws it with uPlot (vendored).
// No framework: the page is a handful of tiles, three charts and two lists, refreshed in place.
"use strict";

(function () {
  const KEY_STORAGE = "garrison.dashboard.key";
  const POLL_MS = 1500;
  // Fixed colours: the browser test looks for the power and cap colours in its screenshot.
  const COLORS = {
    power: "#e4572e",
    cap: "#1f4fd6",
    queue: "#17becf",
    slo: "#8c564b",
    pools: { training: "#6a3d9a", serving: "#2ca02c", lent: "#ff7f0e", idle: "#9e9e9e" },
    extra: ["#bcbd22", "#e377c2", "#7f7f7f", "#1f77b4"],
  };

  const $ = (id) => document.getElementById(id);
  const charts = { power: null, allocation: null, queue: null, allocationPools: null, allocationRaw: [] };
  const thumbs = new Map(); // video id -> object URL of its fetched thumbnail
  let timer = null;
  let videosSignature = "";

  function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

  function showLogin(message) {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    $("board").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    $("key-error").textContent = message || "";
    $("status").textContent = "not connected";
    $("api-key").focus();
  }

  function showBoard() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("sign-out").hidden = false;
  }

  async function poll() {
    timer = null;
    const key = apiKey();
    if (!key) { showLogin(); return; }
    let response;
    try {
      response = await fetch("/dashboard/data", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
    } catch (err) {
      $("status").textContent = "server unreachable; retrying";
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(await errorMessage(response));
      return;
    }
    if (!response.ok) {
      $("status").textContent = "error: " + (await errorMessage(response)) + "; retrying";
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    const data = await response.json();
    showBoard();
    render(data);
    timer = setTimeout(poll, POLL_MS);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (err) {
      return response.status + " " + response.statusText;
    }
  }

  function fmt(value, digits, unit) {
    if (value === null || value === undefined) return "–";
    return value.toFixed(digits) + (unit ? " " + unit : "");
  }

  function fmtJoules(j) {
    if (j === null || j === undefined) return "–";
    if (Math.abs(j) >= 1e6) return (j / 1e6).toFixed(2) + " MJ";
    if (Math.abs(j) >= 1e3) return (j / 1e3).toFixed(2) + " kJ";
    return j.toFixed(1) + " J";
  }

  function fmtUsd(usd) {
    if (usd === null || usd === undefined) return "–";
    return "$" + (usd < 0.01 ? usd.toPrecision(2) : usd.toFixed(2));
  }

  function clock(ts) { return new Date(ts * 1000).toLocaleTimeString([], { hour12: false }); }

  function gateClass(state) {
    if (state === "online" || state === "open") return "ok";
    if (state === "degraded") return "warn";
    if (state === "offline" || state === "closed") return "bad";
    return "";
  }

  function render(data) {
    const gov = data.governor;
    $("status").className = gov.reporting ? "muted" : "error";
    $("status").textContent = "updated " + clock(data.now) + (gov.reporting
      ? " · governor reporting"
      : gov.last_sample_ts ? " · governor silent since " + clock(gov.last_sample_ts) : " · governor has not reported");

    const p = data.power;
    $("power-now").textContent = fmt(p.power_w, 0, "W");
    $("power-cap").textContent = fmt(p.power_cap_w, 0, "W");
    const headroom = $("power-headroom");
    if (p.power_w !== null && p.power_cap_w !== null) {
      const under = p.power_cap_w - p.power_w;
      headroom.textContent = under >= 0 ? fmt(under, 0, "W") + " under the cap" : fmt(-under, 0, "W") + " OVER the cap";
      headroom.className = "sub" + (under < 0 ? " over-cap" : "");
    } else {
      headroom.textContent = "no reading";
    }

    const gate = $("gate-state");
    gate.textContent = data.gate.state;
    gate.className = "gate " + gateClass(data.gate.state);
    $("gate-reason").textContent = data.gate.reason;

    const q = data.queue;
    $("queue-queued").textContent = String(q.queued);
    $("queue-detail").textContent = q.in_progress + " in progress · oldest " + fmt(q.oldest_queued_age_s, 1, "s")
      + " · " + q.completed_last_minute + " done in the last minute";

    $("slo-attainment").textContent = data.slo.attainment === null ? "–" : fmt(100 * data.slo.attainment, 1, "%");
    const quality = data.serving.quality;
    $("serving-detail").textContent = "quality " + (quality ? quality.level + " (" + (quality.name || "?") + ")" : "–")
      + " · admission " + (data.serving.admission_mode || "–");

    const pools = Object.entries(data.allocation);
    $("allocation-now").textContent = pools.length ? pools.map(([k, v]) => k + " " + fmt(v, 0)).join(" · ") : "–";
    const devices = data.fleet.devices;
    $("fleet-detail").textContent = devices === null ? "" : "fleet: "
      + (Array.isArray(devices) ? devices.length : typeof devices === "number" ? devices : Object.keys(devices).length)
      + " devices";

    drawCharts(data.samples);
    for (const chart of [charts.power, charts.allocation, charts.queue]) legendAtLatest(chart);
    renderVideos(data.videos, data.totals);
    renderDecisions(data.decisions);
  }

  function chartSize(el) {
    return { width: Math.max(el.clientWidth, 300), height: 220 };
  }

  function drawCharts(s) {
    const powerEl = $("chart-power");
    const powerData = [s.ts, s.power_w, s.power_cap_w];
    if (!charts.power) {
      charts.power = new uPlot({
        ...chartSize(powerEl),
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
        series: [
          {},
          { label: "power (W)", stroke: COLORS.power, width: 2, value: (u, v) => fmt(v, 0, "W") },
          { label: "cap (W)", stroke: COLORS.cap, width: 2, value: (u, v) => fmt(v, 0, "W") },
        ],
        axes: [{}, { label: "W", size: 60 }],
        hooks: { draw: [(u) => { powerEl.dataset.points = String(u.data[0].length); }], ready: [legendAtLatest] },
      }, powerData, powerEl);
    } else {
      charts.power.setData(powerData);
    }

    // Allocation as stacked areas: each series is the running sum, filled down to the one below it (uPlot's
    // stacking recipe); the legend shows the pool's own count.
    const names = Object.keys(s.allocation);
    const allocEl = $("chart-allocation");
    const raw = names.map((n) => s.allocation[n]);
    const stacked = [];
    const sums = s.ts.map(() => 0);
    raw.forEach((values) => {
      values.forEach((v, i) => { sums[i] += v || 0; });
      stacked.push(sums.slice());
    });
    const allocData = [s.ts, ...stacked];
    charts.allocationRaw = raw;
    if (!charts.allocation || charts.allocationPools !== names.join(",")) {
      if (charts.allocation) charts.allocation.destroy();
      let extra = 0;
      const series = [{}].concat(names.map((name, i) => {
        const color = COLORS.pools[name] || COLORS.extra[extra++ % COLORS.extra.length];
        return {
          label: name,
          stroke: color,
          fill: color + "99",
          width: 1,
          paths: uPlot.paths.stepped({ align: 1 }),
          value: (u, v, si, idx) => (idx === null || idx === undefined ? "–" : fmt(charts.allocationRaw[si - 1][idx], 0)),
        };
      }));
      const bands = names.slice(1).map((_, i) => ({ series: [i + 2, i + 1] }));
      charts.allocation = new uPlot({
        ...chartSize(allocEl),
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1) + 1] } },
        series,
        bands,
        axes: [{}, { label: "devices", size: 60 }],
        hooks: { draw: [(u) => { allocEl.dataset.points = String(u.data[0].length); }], ready: [legendAtLatest] },
      }, allocData, allocEl);
      charts.allocationPools = names.join(",");
    } else {
      charts.allocation.setData(allocData);
    }

    const queueEl = $("chart-queue");
    const slo = s.slo_attainment.map((v) => (v === null ? null : 100 * v));
    const queueData = [s.ts, s.queue_depth, slo];
    if (!charts.queue) {
      charts.queue = new uPlot({
        ...chartSize(queueEl),
        scales: {
          x: { time: true },
          y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.2] },
          pct: { range: [0, 105] },
        },
        series: [
          {},
          { label: "queue depth", stroke: COLORS.queue, width: 2, scale: "y", paths: uPlot.paths.stepped({ align: 1 }) },
          { label: "SLO attainment (%)", stroke: COLORS.slo, width: 2, scale: "pct", value: (u, v) => fmt(v, 1, "%") },
        ],
        axes: [{}, { label: "requests", size: 60, scale: "y" }, { label: "%", side: 1, scale: "pct", grid: { show: false } }],
        hooks: { draw: [(u) => { queueEl.dataset.points = String(u.data[0].length); }], ready: [legendAtLatest] },
      }, queueData, queueEl);
    } else {
      charts.queue.setData(queueData);
    }
  }

  // With the cursor off a chart, its legend shows the latest values rather than dashes.
  function legendAtLatest(u) {
    if (u.cursor.left === undefined || u.cursor.left < 0) u.setLegend({ idx: Math.max(u.data[0].length - 1, 0) });
  }

  function resizeCharts() {
    for (const [name, id] of [["power", "chart-power"], ["allocation", "chart-allocation"], ["queue", "chart-queue"]]) {
      if (charts[name]) charts[name].setSize(chartSize($(id)));
    }
  }

  function renderVideos(videos, totals) {
    $("video-totals").textContent = "· " + videos.length + " shown, completed ones took " + fmtJoules(totals.joules)
      + ", " + fmtUsd(totals.cost_usd);
    const signature = JSON.stringify(videos.map((v) => [v.id, v.status, v.progress, v.thumbnail_url]));
    if (signature === videosSignature) return;
    videosSignature = signature;
    const box = $("videos");
    box.replaceChildren();
    const shown = new Set();
    for (const v of videos) {
      const card = document.createElement("div");
      card.className = "video";
      card.dataset.videoId = v.id;
      let thumb;
      if (v.thumbnail_url) {
        thumb = document.createElement("img");
        thumb.className = "thumb";
        thumb.alt = "thumbnail of " + v.id;
        shown.add(v.id);
        loadThumbnail(v.id, v.thumbnail_url, thumb);
      } else {
        thumb = document.createElement("div");
        thumb.className = "thumb none";
        thumb.textContent = v.status === "completed" ? "no thumbnail" : v.status.replace("_", " ");
      }
      card.appendChild(thumb);
      const lines = [
        ["prompt", v.prompt],
        ["", v.tenant + " · " + v.seconds + " s " + v.size],
        ["status-" + v.status, v.status === "in_progress" ? "in progress " + v.progress + "%" : v.status
          + (v.error_code ? " (" + v.error_code + ")" : "")],
        ["", fmtJoules(v.joules) + " · " + fmtUsd(v.cost_usd) + " · " + fmt(v.seconds_wall, 1, "s")
          + (v.quality ? " · q" + v.quality.level : "")],
      ];
      for (const [cls, text] of lines) {
        const line = document.createElement("div");
        if (cls) line.className = cls;
        line.textContent = text;
        if (cls === "prompt") line.title = text;
        card.appendChild(line);
      }
      box.appendChild(card);
    }
    for (const [id, url] of thumbs) {
      if (!shown.has(id)) { URL.revokeObjectURL(url); thumbs.delete(id); }
    }
  }

  async function loadThumbnail(id, url, img) {
    if (thumbs.has(id)) { img.src = thumbs.get(id); return; }
    try {
      const response = await fetch(url, { headers: { Authorization: "Bearer " + apiKey() } });
      if (!response.ok) { img.alt = "thumbnail unavailable (" + response.status + ")"; return; }
      const objectUrl = URL.createObjectURL(await response.blob());
      thumbs.set(id, objectUrl);
      img.src = objectUrl;
    } catch (err) {
      img.alt = "thumbnail unavailable";
    }
  }

  function renderDecisions(decisions) {
    const body = $("decisions").tBodies[0];
    body.replaceChildren();
    for (const d of decisions) {
      const row = document.createElement("tr");
      for (const text of [clock(d.ts), String(d.tick), d.action, d.target || "", d.reason]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("api-key").value = "";
    $("key-error").textContent = "";
    $("status").textContent = "connecting…";
    poll();
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin();
  });

  window.addEventListener("resize", resizeCharts);

  if (apiKey()) poll(); else showLogin();
})();
