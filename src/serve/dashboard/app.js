// medallion dashboard: fetches /api/*, draws SVG charts by hand and follows
// /api/live/stream (server-sent events read through fetch, so the bearer
// token travels in a header, never in a URL). The token, when the server
// wants one, is asked once and kept in sessionStorage (this tab only).
"use strict";

const TOKEN_KEY = "medallion-token";
const SEGMENT_COLORS = {
  "Champions": "#2f9e6b", "Loyal Customers": "#3b6fd8", "Potential Loyalists": "#7a5af5",
  "Need Attention": "#e0a526", "At Risk": "#e8743b", "Hibernating": "#8d99ae",
};
const SCORE_COLORS = ["#d64545", "#e8743b", "#e0a526", "#6cb36c", "#2f9e6b"];
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
const money2 = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
const count = new Intl.NumberFormat("en-US");

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

const state = { customers: [], sort: { key: "monetary", dir: -1 }, liveUpdates: 0, lastCombined: 0 };

// ---- API access and the token ----------------------------------------------
function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

let asking = null;
function askToken() {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-form").onsubmit = () => {
        sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
        $("token-button").hidden = false;
        asking = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return asking;
}

// `also`: failure statuses whose JSON body the caller shows itself.
async function api(path, { also = [] } = {}) {
  for (;;) {
    const response = await fetch(path, { headers: authHeaders() });
    if (response.status === 401) { await askToken(); continue; }
    const body = await response.json().catch(() => ({}));
    if (!response.ok && !also.includes(response.status)) throw new Error(body.error || `${path}: HTTP ${response.status}`);
    return body;
  }
}

function showError(message) {
  const el = $("error");
  el.hidden = !message;
  el.textContent = message || "";
}

// ---- SVG helpers --------------------------------------------------------------
function svg(width, height, inner) {
  return `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="xMinYMin meet" role="img">${inner}</svg>`;
}

// Horizontal bars: items [{label, value, parts?:[{value,color}]}].
function barChart(items, { color = "#3b6fd8", format = money.format, width = 520 } = {}) {
  if (!items.length) return '<p class="empty">No data.</p>';
  const row = 26, labelW = 120, valueW = 92, barW = width - labelW - valueW;
  const max = Math.max(...items.map((i) => i.value), 1e-9);
  let inner = "";
  items.forEach((item, i) => {
    const y = i * row;
    inner += `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${esc(item.label)}</text>`;
    let x = labelW;
    for (const part of item.parts || [{ value: item.value, color }]) {
      const w = Math.max(0, (part.value / max) * barW);
      inner += `<rect x="${x}" y="${y + 5}" width="${w.toFixed(1)}" height="${row - 10}" rx="3" fill="${part.color}"><title>${esc(item.label)}: ${esc(format(part.value))}</title></rect>`;
      x += w;
    }
    inner += `<text x="${x + 6}" y="${y + 17}" class="axis">${esc(format(item.value))}</text>`;
  });
  return svg(width, items.length * row + 4, inner);
}

function donut(items) {
  const total = items.reduce((s, i) => s + i.value, 0) || 1;
  const r = 70, c = 2 * Math.PI * r;
  let offset = 0, inner = "";
  for (const item of items) {
    const len = (item.value / total) * c;
    inner += `<circle r="${r}" cx="85" cy="85" fill="none" stroke="${item.color}" stroke-width="26" stroke-dasharray="${len.toFixed(2)} ${(c - len).toFixed(2)}" stroke-dashoffset="${(-offset).toFixed(2)}" transform="rotate(-90 85 85)"><title>${esc(item.label)}: ${item.value}</title></circle>`;
    offset += len;
  }
  inner += `<text x="85" y="82" text-anchor="middle" style="font-size:22px;font-weight:700">${count.format(total)}</text><text x="85" y="100" text-anchor="middle" class="axis">customers</text>`;
  return svg(170, 170, inner);
}

// ---- panels -------------------------------------------------------------------
function setNumber(id, value, format) {
  const el = $(id);
  el.dataset.value = value;
  el.textContent = value == null ? "—" : format(value);
}

async function loadKpis() {
  const k = await api("/api/kpis");
  setNumber("kpi-total-revenue", k.total_revenue, money2.format);
  setNumber("kpi-orders", k.orders, count.format);
  setNumber("kpi-customers", k.customers, count.format);
  setNumber("kpi-avg-order-value", k.avg_order_value, money2.format);
  $("snapshot").textContent = "snapshot " + k.snapshot_date;
  $("top-countries").innerHTML = k.top_countries.map((c) =>
    `<li data-country="${esc(c.country)}" data-revenue="${c.revenue}"><span class="rank">${c.rank}</span><span class="country">${esc(c.country)}</span><span class="amount">${money.format(c.revenue)}</span></li>`).join("");
  $("category-chart").innerHTML = barChart(k.categories.map((c) => ({ label: c.category_name, value: c.revenue })), { width: 420 });
  const segments = k.segments.map((s) => ({ label: s.segment, value: s.customers, share: s.share_of_revenue, color: SEGMENT_COLORS[s.segment] || "#999" }));
  $("segment-chart").innerHTML = donut(segments);
  $("segment-legend").innerHTML = segments.map((s) =>
    `<li><i class="sw" style="background:${s.color}"></i><span>${esc(s.label)}</span><span class="num">${s.value} · ${(100 * s.share).toFixed(1)}% rev.</span></li>`).join("");
}

async function loadCustomers() {
  const rfm = await api("/api/rfm");
  state.customers = rfm.customers;
  renderCustomers();
}

function renderCustomers() {
  const query = $("customer-search").value.trim().toLowerCase();
  const { key, dir } = state.sort;
  const rows = state.customers
    .filter((c) => !query || [c.customer_id, c.company_name, c.country, c.segment].some((v) => String(v ?? "").toLowerCase().includes(query)))
    .sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0) * dir);
  const score = (s) => `<span class="score" style="background:${SCORE_COLORS[(s || 1) - 1]}">${s}</span>`;
  $("customers").tBodies[0].innerHTML = rows.map((c) => `<tr>
    <td>${esc(c.customer_id)}</td><td>${esc(c.company_name)}</td><td>${esc(c.country)}</td>
    <td><span class="seg" style="background:${SEGMENT_COLORS[c.segment] || "#999"}">${esc(c.segment)}</span></td>
    <td class="num">${c.recency_days}</td><td class="num">${c.frequency}</td><td class="num">${money2.format(c.monetary)}</td>
    <td class="num">${score(c.r_score)}</td><td class="num">${score(c.f_score)}</td><td class="num">${score(c.m_score)}</td></tr>`).join("");
  $("customer-count").textContent = `${rows.length} of ${state.customers.length}`;
  for (const th of $("customers").tHead.rows[0].cells) {
    th.classList.toggle("sorted-asc", th.dataset.key === key && dir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === key && dir === -1);
  }
}

function renderLive(live) {
  state.liveUpdates += 1;
  const el = $("live-total");
  el.dataset.updates = state.liveUpdates;
  setNumber("live-total", live.total_ventes_live, money2.format);
  el.dataset.updates = state.liveUpdates;
  $("live-eps").textContent = live.events_per_second.toFixed(1);
  $("live-eps").dataset.value = live.events_per_second;
  $("live-transactions").textContent = count.format(live.nb_transactions);
  $("live-batches").textContent = count.format(live.batches_committed);
  $("live-rejected").textContent = count.format(live.rejected);
  $("live-lag").textContent = count.format(live.total_lag);
  $("live-updated").textContent = live.updated_at ? "updated " + new Date(live.updated_at).toLocaleTimeString() : "";
  const countries = [...live.countries].sort((a, b) => b.total_ventes_live - a.total_ventes_live);
  $("live-chart").innerHTML = countries.length
    ? barChart(countries.map((c) => ({ label: c.pays, value: c.total_ventes_live })), { color: "#e8743b" })
    : '<p class="empty">No live data yet: start <code>medallion stream</code>.</p>';
  $("live-chart").dataset.countries = countries.map((c) => c.pays).join(",");
  document.body.classList.toggle("live-on-page", countries.length > 0);
  if (Date.now() - state.lastCombined > 2000) loadCombined().catch(() => {});
}

async function loadCombined() {
  state.lastCombined = Date.now();
  const data = await api("/api/combined");
  const rows = data.countries.slice(0, 14).map((c) => ({
    label: c.country, value: c.total_revenue,
    parts: [{ value: c.batch_revenue, color: "#3b6fd8" }, { value: c.live_revenue, color: "#e8743b" }],
  }));
  $("combined-chart").innerHTML = barChart(rows);
}

async function followLive() {
  for (;;) {
    try {
      const response = await fetch("/api/live/stream", { headers: authHeaders() });
      if (response.status === 401) { await askToken(); continue; }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      $("live-status").textContent = "live: connected";
      $("live-status").className = "pill live-on";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) renderLive(JSON.parse(data));
        }
      }
    } catch (err) {
      // fall through to reconnect
    }
    $("live-status").textContent = "live: reconnecting";
    $("live-status").className = "pill live-off";
    await sleep(2000);
  }
}

async function loadRuns() {
  const { runs } = await api("/api/runs?limit=60");
  $("runs").tBodies[0].innerHTML = runs.map((r) => {
    const d = r.details || {};
    const failures = Object.entries(d.failures_by_rule || {}).filter(([, n]) => n > 0).map(([rule, n]) => `${rule}: ${n}`);
    const lag = d.lag ? Object.values(d.lag).reduce((a, b) => a + b, 0) : null;
    const detail = r.error ? r.error
      : failures.length ? "quarantine " + failures.join(", ")
      : lag != null ? `lag ${lag} · ${d.batches ?? 0} batches · ${d.rejected ?? 0} rejected`
      : Object.entries(d.tables || {}).map(([t, n]) => `${t} ${n}`).join(", ");
    return `<tr><td>${esc(new Date(r.started_at).toLocaleString())}</td><td>${esc(r.command)}</td><td>${esc(r.stage)}</td>
      <td class="num">${(r.duration_ms / 1000).toFixed(2)} s</td><td class="num">${count.format(r.rows)}</td><td class="num">${count.format(r.quarantined)}</td>
      <td class="status-${esc(r.status)}">${esc(r.status)}</td><td class="details" title="${esc(detail)}">${esc(detail)}</td></tr>`;
  }).join("") || '<tr><td colspan="8" class="empty">No runs recorded yet.</td></tr>';
}

// Where ad-hoc SQL runs (`medallion serve --engine`): one quiet line for this
// process; for a cluster, its scheduler, executors and jobs, or why the
// scheduler does not answer (502, shown in the panel).
async function loadCluster() {
  const c = await api("/api/cluster", { also: [502] });
  const local = c.engine === "local";
  const executors = c.executors || [], jobs = c.jobs || [];
  const slots = executors.reduce((n, e) => n + e.slots, 0);
  const panel = $("cluster-panel");
  panel.dataset.engine = c.engine || "";
  panel.dataset.executors = executors.length;
  panel.dataset.slots = slots;
  $("cluster-local").hidden = !local;
  $("cluster-card").hidden = local;
  if (local) return;
  $("cluster-summary").textContent = c.error ? c.engine
    : `scheduler ${c.scheduler} · Ballista ${c.version} · ${executors.length} executor(s), ${slots} slot(s)`;
  $("cluster-error").hidden = !c.error;
  $("cluster-error").textContent = c.error || "";
  $("cluster-executors").tBodies[0].innerHTML = executors.map((e) => `<tr data-executor="${esc(e.id)}" data-slots="${e.slots}">
    <td><code>${esc(e.id)}</code></td><td>${esc(e.address)}</td><td class="num">${e.slots}</td>
    <td class="num">${e.last_seen_seconds == null ? "none yet" : e.last_seen_seconds + " s ago"}</td></tr>`).join("")
    || `<tr><td colspan="4" class="empty">${c.error ? "—" : "No executor: start <code>medallion cluster executor</code>."}</td></tr>`;
  $("cluster-jobs").tBodies[0].innerHTML = jobs.slice(0, 20).map((j) => `<tr data-job="${esc(j.id)}">
    <td><code>${esc(j.id)}</code></td><td class="job-${esc(j.state)}">${esc(j.state)}</td>
    <td class="num">${j.completed_stages}/${j.stages}</td><td class="num">${j.seconds.toFixed(1)} s</td>
    <td class="details" title="${esc(j.reason || "")}">${esc(j.reason || "")}</td></tr>`).join("")
    || `<tr><td colspan="5" class="empty">${c.error ? "—" : "No job yet."}</td></tr>`;
}

// Freshness levels come from `medallion up` ([freshness] in medallion.toml);
// a server running alone answers 404 and the column stays empty.
async function loadFreshness() {
  const response = await fetch("/api/freshness", { headers: authHeaders() }).catch(() => null);
  if (!response || !response.ok) return {};
  const { tables } = await response.json();
  return Object.fromEntries(tables.map((f) => [f.table, f]));
}

async function loadTables() {
  const [{ tables }, freshness] = await Promise.all([api("/api/tables"), loadFreshness()]);
  $("tables").tBodies[0].innerHTML = tables.map((t) => {
    const f = freshness[`${t.layer}.${t.table}`];
    const level = f ? `<span class="fresh fresh-${esc(f.colour)}" title="last commit ${f.age_seconds ?? "?"} s ago">${esc(f.level)}</span>` : "";
    return `<tr>
    <td><span class="layer layer-${esc(t.layer)}">${esc(t.layer)}</span></td><td>${esc(t.table)}</td>
    <td class="num">${t.rows == null ? "—" : count.format(t.rows)}</td><td class="num">${t.version ?? "—"}</td>
    <td>${t.last_commit ? esc(new Date(t.last_commit).toLocaleString()) : "—"}</td><td>${level}</td></tr>`;
  }).join("");
}

// ---- catalog and profiles ------------------------------------------------------
let catalogTimer = null;
async function loadCatalog() {
  const q = $("catalog-search").value.trim();
  const { tables } = await api("/api/catalog" + (q ? "?q=" + encodeURIComponent(q) : ""));
  const columns = tables.reduce((n, t) => n + t.columns.length, 0);
  $("catalog-count").textContent = `${tables.length} tables · ${columns} columns`;
  $("catalog-list").innerHTML = tables.map((t) => `<details class="catalog-table"${q ? " open" : ""}>
    <summary><span class="layer layer-${esc(t.layer)}">${esc(t.layer)}</span> <b>${esc(t.table)}</b>
      <span class="meta">${t.rows == null ? "" : count.format(t.rows) + " rows"}${t.version == null ? "" : " · v" + t.version}</span>
      <div class="desc">${esc(t.description || "(no description)")}</div></summary>
    <table class="data"><tbody>${t.columns.map((c) => `<tr><td><code>${esc(c.name)}</code></td><td>${esc(c.data_type)}</td>
      <td>${esc(c.description || "(no description)")}</td></tr>`).join("")}</tbody></table></details>`).join("")
    || '<p class="empty">No table matches.</p>';
}

// ---- lineage ------------------------------------------------------------------
const LINEAGE_LAYERS = ["postgres", "ref", "bronze", "silver", "gold", "live", "serving"];
let lineage = null;
async function loadLineage() {
  lineage = await api("/api/lineage");
  const names = [...new Set(lineage.edges.flatMap((e) => [e.from, e.to]))];
  const layerOf = (n) => n.split(".")[0];
  // One column per layer present, live beside serving's inputs.
  const columns = LINEAGE_LAYERS.map((l) => names.filter((n) => layerOf(n) === l).sort()).filter((c) => c.length);
  const box = { w: 178, h: 24, gapX: 62, gapY: 10, pad: 8 };
  const pos = {};
  columns.forEach((col, i) => col.forEach((n, j) => { pos[n] = { x: box.pad + i * (box.w + box.gapX), y: box.pad + j * (box.h + box.gapY) }; }));
  const width = box.pad * 2 + columns.length * box.w + (columns.length - 1) * box.gapX;
  const height = box.pad * 2 + Math.max(...columns.map((c) => c.length)) * (box.h + box.gapY);
  const svg = $("lineage-graph");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const edges = lineage.edges.map((e) => {
    const a = pos[e.from], b = pos[e.to];
    const x1 = a.x + box.w, y1 = a.y + box.h / 2, x2 = b.x, y2 = b.y + box.h / 2, mid = (x1 + x2) / 2;
    return `<path class="edge" data-from="${esc(e.from)}" data-to="${esc(e.to)}" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}"/>`;
  }).join("");
  const nodes = names.map((n) => {
    const p = pos[n], clickable = lineage.columns[n] ? " clickable" : "";
    return `<g class="node layer-${esc(layerOf(n))}${clickable}" data-name="${esc(n)}"><rect x="${p.x}" y="${p.y}" width="${box.w}" height="${box.h}" rx="5"/>
      <text x="${p.x + 8}" y="${p.y + 16}">${esc(n)}</text></g>`;
  }).join("");
  svg.innerHTML = edges + nodes;
  $("lineage-count").textContent = `${names.length} tables · ${lineage.edges.length} edges`;
  for (const g of svg.querySelectorAll("g.node")) g.addEventListener("click", () => showColumns(g.dataset.name));
}

function showColumns(table) {
  for (const path of $("lineage-graph").querySelectorAll("path.edge")) {
    path.classList.toggle("lit", path.dataset.to === table || path.dataset.from === table);
  }
  const cols = lineage.columns[table];
  if (!cols) { $("lineage-columns").innerHTML = `<p class="empty">${esc(table)}: no column lineage (a copy of its source or a view).</p>`; return; }
  const ref = (c) => `<code>${esc(c.table)}.${esc(c.column)}</code>`;
  const rows = cols.fields.map((f) => `<tr><td><code>${esc(f.name)}</code></td><td>${f.inputs.length ? f.inputs.map(ref).join(", ") : '<span class="empty">constant / count</span>'}</td></tr>`).join("");
  $("lineage-columns").innerHTML = `<h3>${esc(table)}</h3><table class="data"><thead><tr><th>Column</th><th>Computed from</th></tr></thead><tbody>${rows}</tbody></table>
    <p class="hint">Rows filtered, joined, grouped or ordered by: ${cols.indirect.map(ref).join(", ") || "nothing"}</p>`;
}

// Drift thresholds: null rate in points, distinct count and mean relative.
const DRIFT = { nullPoints: 5, distinct: 0.2, mean: 0.1 };
const pct = (x) => (100 * x).toFixed(1);
function relChange(now, before) {
  if (now == null || before == null) return 0;
  return Math.abs(now - before) / Math.max(Math.abs(before), 1e-12);
}

async function loadProfileTables() {
  const { tables } = await api("/api/profiles");
  const select = $("profile-table");
  const current = select.value;
  select.innerHTML = tables.map((t) => `<option${t === current ? " selected" : ""}>${esc(t)}</option>`).join("");
  if (tables.length) await loadProfile();
  else $("profile").tBodies[0].innerHTML = '<tr><td colspan="11" class="empty">No profile yet: run <code>medallion profile</code>.</td></tr>';
}

async function loadProfile() {
  const table = $("profile-table").value;
  if (!table) return;
  const { latest, previous } = await api("/api/profiles?table=" + encodeURIComponent(table));
  const before = Object.fromEntries(previous.map((c) => [c.column_name, c]));
  $("profile-dates").textContent = latest.length
    ? `profile ${latest[0].profile_date}` + (previous.length ? ` vs ${previous[0].profile_date}` : " (no previous profile)") : "";
  $("profile").tBodies[0].innerHTML = latest.map((c) => {
    const p = before[c.column_name];
    const rate = c.row_count ? c.null_count / c.row_count : 0;
    const prevRate = p && p.row_count ? p.null_count / p.row_count : null;
    const nullDrift = prevRate != null && Math.abs(rate - prevRate) * 100 > DRIFT.nullPoints;
    const distinctDrift = p && relChange(c.distinct_count, p.distinct_count) > DRIFT.distinct;
    const meanDrift = p && relChange(c.mean, p.mean) > DRIFT.mean;
    const was = (v) => (p ? ` title="previous: ${esc(v)}"` : "");
    const tops = (c.top_values || []).map((t) => `${esc(t.value)} <small>×${count.format(t.count)}</small>`).join(", ");
    const length = c.min_length == null ? "" : `${c.min_length}–${c.max_length}`;
    return `<tr><td><code>${esc(c.column_name)}</code></td><td>${esc(c.data_type)}</td><td class="num">${count.format(c.row_count)}</td>
      <td class="num${nullDrift ? " drift" : ""}"${was(prevRate == null ? "" : pct(prevRate) + " %")}>${pct(rate)}</td>
      <td class="num${distinctDrift ? " drift" : ""}"${was(p ? p.distinct_count : "")}>${c.distinct_method === "exact" ? "" : "~"}${count.format(c.distinct_count)}</td>
      <td>${esc(c.min_value ?? "")}</td><td>${esc(c.max_value ?? "")}</td>
      <td class="num${meanDrift ? " drift" : ""}"${was(p && p.mean != null ? p.mean.toFixed(4) : "")}>${c.mean == null ? "" : c.mean.toFixed(4)}</td>
      <td class="num">${c.stddev == null ? "" : c.stddev.toFixed(4)}</td><td>${length}</td><td class="tops">${tops}</td></tr>`;
  }).join("");
}

async function refreshAll() {
  const results = await Promise.allSettled([loadKpis(), loadCustomers(), loadRuns(), loadCluster(), loadTables(), loadCombined(), loadCatalog(), loadLineage(), loadProfileTables()]);
  const failed = results.find((r) => r.status === "rejected");
  showError(failed ? failed.reason.message : "");
}

// ---- wiring ---------------------------------------------------------------------
$("customer-search").addEventListener("input", renderCustomers);
$("catalog-search").addEventListener("input", () => { clearTimeout(catalogTimer); catalogTimer = setTimeout(() => loadCatalog().catch((e) => showError(e.message)), 250); });
$("profile-table").addEventListener("change", () => loadProfile().catch((e) => showError(e.message)));
for (const th of $("customers").tHead.rows[0].cells) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (["customer_id", "company_name", "country", "segment"].includes(key) ? 1 : -1) };
    renderCustomers();
  });
}
$("token-button").hidden = !sessionStorage.getItem(TOKEN_KEY);
$("token-button").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); askToken().then(refreshAll); });

refreshAll();
followLive();
setInterval(refreshAll, 15000);
