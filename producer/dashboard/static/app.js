// xcam's dashboard: sign-in, batches (upload, live progress, results with overlays, report,
// CSV) and operations (charts from /v1/stats, the inference log, the fleet). Plain DOM and
// fetch; the charts are Chart.js, embedded in the binary. The session is an HttpOnly cookie
// this script never sees; what it shows follows the signed-in token's role.
"use strict";

const view = document.getElementById("view");
let timer = null;
const charts = [];
// Who is signed in (`GET /v1/session`), or null.
let me = null;
const may = {
  upload: () => ["submitter", "admin"].includes(me?.role),
  cancel: () => ["submitter", "operator", "admin"].includes(me?.role),
  remove: () => ["submitter", "admin"].includes(me?.role),
  retry: () => ["submitter", "admin"].includes(me?.role),
  pixels: () => ["viewer", "submitter", "admin"].includes(me?.role),
  fleet: () => ["operator", "admin"].includes(me?.role),
};

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (n, d = 1) => (n == null ? "–" : Number(n).toFixed(d));
const when = (t) => (t ? new Date(t).toLocaleString() : "–");

async function api(path, options) {
  const r = await fetch(path, options);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (r.status === 401) {
    me = null;
    signInPage(body?.message);
    throw new Error(body ? `${body.code}: ${body.message}` : "signed out");
  }
  if (!r.ok) throw new Error(body ? `${body.code}: ${body.message}` : `HTTP ${r.status}`);
  return body;
}

// ---------------------------------------------------------------- session

function showWho() {
  document.getElementById("who").textContent = me ? `${me.name} · ${me.role}${me.projects.length ? " · " + me.projects.join(", ") : ""}` : "";
  document.getElementById("sign-out").hidden = !me;
  document.querySelector("nav").hidden = !me;
}

function signInPage(why) {
  clearInterval(timer);
  showWho();
  view.innerHTML = `
    <h1>Sign in</h1>
    <form id="sign-in" class="card row">
      <label>API token <input type="password" name="token" id="token" size="60" autocomplete="off" required></label>
      <button type="submit" id="sign-in-button">Sign in</button>
    </form>
    <p class="muted">A token from <code>xcam token create</code>. The dashboard keeps a session cookie, never the token.</p>
    <p class="error" id="sign-in-error">${esc(why && why !== "signed out" ? why : "")}</p>`;
  document.getElementById("sign-in").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/v1/session", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: document.getElementById("token").value }) });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      document.getElementById("sign-in-error").textContent = `${body.code}: ${body.message}`;
      return;
    }
    me = body;
    route();
  });
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await fetch("/v1/session", { method: "DELETE" });
  me = null;
  location.hash = "#/";
  signInPage();
});

function progressBar(fraction, id) {
  return `<div class="progress"${id ? ` id="${id}"` : ""}><div style="width:${Math.round((fraction || 0) * 100)}%"></div></div>`;
}

async function route() {
  clearInterval(timer);
  if (!me) {
    const r = await fetch("/v1/session");
    if (!r.ok) return signInPage();
    me = await r.json();
  }
  showWho();
  charts.splice(0).forEach((c) => c.destroy());
  const hash = location.hash || "#/";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", hash.startsWith(a.getAttribute("href")) && (a.dataset.nav !== "batches" || !hash.startsWith("#/ops"))));
  const batch = hash.match(/^#\/batches\/([0-9a-f-]+)/);
  if (batch) return batchPage(batch[1]);
  if (hash.startsWith("#/ops")) return opsPage();
  return batchesPage();
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---------------------------------------------------------------- batches

async function batchesPage() {
  const models = await api("/v1/models").catch(() => []);
  // A token of one project uploads there; of several, one is picked; of all, one is named.
  const project = me.projects.length === 1 ? ""
    : me.projects.length ? `<label>Project <select name="project">${me.projects.map((p) => `<option>${esc(p)}</option>`).join("")}</select></label>`
    : `<label>Project <input name="project" size="12" required></label>`;
  view.innerHTML = `
    <h1>Batches</h1>
    <div class="card" ${may.upload() ? "" : "hidden"}>
      <form id="upload" class="row">
        <label>ZIP of radiographs <input type="file" name="file" accept=".zip,application/zip" required></label>
        ${project}
        <label>Model <select name="model">${models.map((m) => `<option>${esc(m.name)}</option>`).join("")}</select></label>
        <label>Method <select name="method"><option>gradcam</option><option>gradcam++</option><option>hirescam</option></select></label>
        <label>Labels <input name="labels" value="top1" size="14" title="top1, positive, all, or names"></label>
        <label><span><input type="checkbox" name="pseudonymize_names" value="true"> pseudonymise names</span></label>
        <button type="submit" id="upload-button">Upload</button>
      </form>
      <div id="upload-progress" hidden>${progressBar(0, "upload-bar")}<span class="muted" id="upload-text"></span></div>
      <p class="error" id="upload-error"></p>
    </div>
    <table id="batches"><thead><tr><th>batch</th><th>project</th><th>status</th><th>model</th><th>progress</th><th class="num">items</th><th class="num">failed</th><th class="num">images/s</th><th>created</th></tr></thead><tbody></tbody></table>`;
  document.getElementById("upload").addEventListener("submit", upload);
  const refresh = async () => {
    const list = await api("/v1/batches?limit=50").catch(() => ({ batches: [] }));
    document.querySelector("#batches tbody").innerHTML = list.batches.map((b) => `
      <tr data-batch="${b.id}">
        <td><a href="#/batches/${b.id}"><code>${b.id.slice(0, 8)}…</code></a></td>
        <td>${esc(b.project)}</td>
        <td class="status ${b.status}">${b.status}</td>
        <td>${esc(b.model_name)}</td>
        <td>${progressBar(b.progress)}</td>
        <td class="num">${b.counts.total}</td>
        <td class="num">${b.counts.failed + b.counts.rejected}</td>
        <td class="num">${fmt(b.throughput_per_s)}</td>
        <td>${when(b.created_at)}</td>
      </tr>`).join("") || `<tr><td colspan="9" class="muted">No batches yet${may.upload() ? ": upload a ZIP above" : ""}.</td></tr>`;
  };
  await refresh();
  timer = setInterval(refresh, 2000);
}

function upload(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  // An empty field means "the default": leave it out rather than send an empty value.
  for (const [key, value] of [...data.entries()]) if (value === "") data.delete(key);
  // XMLHttpRequest, not fetch: only it reports upload progress.
  const xhr = new XMLHttpRequest();
  const bar = document.querySelector("#upload-bar > div");
  document.getElementById("upload-progress").hidden = false;
  document.getElementById("upload-error").textContent = "";
  document.getElementById("upload-button").disabled = true;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.style.width = `${(100 * e.loaded) / e.total}%`;
    document.getElementById("upload-text").textContent = ` ${(e.loaded / 1048576).toFixed(1)} / ${(e.total / 1048576).toFixed(1)} MiB`;
  };
  xhr.onload = () => {
    document.getElementById("upload-button").disabled = false;
    const body = JSON.parse(xhr.responseText || "{}");
    if (xhr.status === 202) location.hash = `#/batches/${body.id}`;
    else document.getElementById("upload-error").textContent = `${body.code}: ${body.message}`;
  };
  xhr.onerror = () => {
    document.getElementById("upload-button").disabled = false;
    document.getElementById("upload-error").textContent = "the upload failed: the server did not answer";
  };
  xhr.open("POST", "/v1/batches");
  xhr.send(data);
}

async function batchPage(id) {
  view.innerHTML = `<h1>Batch <code>${esc(id)}</code></h1><div id="summary"></div>
    <div class="row"><a class="button" id="csv" href="/v1/batches/${id}/results.csv" download>Download CSV</a>
    <button class="secondary" id="cancel" ${may.cancel() ? "" : "hidden"}>Cancel queued items</button>
    <button class="secondary" id="retry" ${may.retry() ? "" : "hidden"}>Retry failed items</button>
    <button class="danger" id="delete" ${may.remove() ? "" : "hidden"}>Delete batch…</button></div>
    <p class="muted" id="retry-note"></p>
    <div class="card" id="delete-confirm" hidden>
      <p><b>Delete this batch and everything xcam holds of it?</b> Its results, overlays and stored
      images go, and its entry names are blanked in the inference log. This cannot be undone.</p>
      <div class="row"><button class="danger" id="delete-yes">Delete</button><button class="secondary" id="delete-no">Keep it</button></div>
      <p class="error" id="delete-error"></p>
    </div>
    <h2>Validation report</h2><div id="report"></div>
    <h2>Results</h2><table id="results"><thead><tr><th>#</th><th>entry</th><th>status</th><th>overlay</th><th>finding</th><th class="num">p</th><th>peak</th><th>box</th><th>distribution</th><th>faithfulness</th><th class="num">ms</th><th>worker</th></tr></thead><tbody></tbody></table>`;
  document.getElementById("cancel").onclick = async () => {
    await api(`/v1/batches/${id}/cancel`, { method: "POST" }).catch((e) => alert(e.message));
  };
  document.getElementById("retry").onclick = async () => {
    const note = document.getElementById("retry-note");
    try {
      const r = await api(`/v1/batches/${id}/retry`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      note.textContent = `retrying ${r.retried} failed item${r.retried === 1 ? "" : "s"}`;
    } catch (e) {
      note.textContent = e.message;
    }
  };
  const confirmDelete = document.getElementById("delete-confirm");
  document.getElementById("delete").onclick = () => (confirmDelete.hidden = false);
  document.getElementById("delete-no").onclick = () => (confirmDelete.hidden = true);
  document.getElementById("delete-yes").onclick = async () => {
    try {
      await api(`/v1/batches/${id}`, { method: "DELETE" });
      clearInterval(timer);
      location.hash = "#/";
    } catch (e) {
      document.getElementById("delete-error").textContent = e.message;
    }
  };
  const refresh = async () => {
    // The batch first, its report and results after, then all drawn at once: an item's result
    // commits with the batch's status, so the page never shows a batch's end beside results
    // from before it.
    const b = await api(`/v1/batches/${id}`);
    const [report, page] = await Promise.all([api(`/v1/batches/${id}/report`), api(`/v1/batches/${id}/results?limit=200`)]);
    const c = b.counts;
    document.getElementById("summary").innerHTML = `
      <div class="stats">
        <div class="stat">status<b class="status ${b.status}" id="batch-status">${b.status}</b></div>
        <div class="stat">progress<b>${Math.round(b.progress * 100)}%</b>${progressBar(b.progress)}</div>
        <div class="stat">succeeded<b>${c.succeeded}</b></div><div class="stat">failed<b>${c.failed}</b></div>
        <div class="stat">rejected<b>${c.rejected}</b></div><div class="stat">queued / running<b>${c.queued} / ${c.running}</b></div>
        <div class="stat">images/s<b>${fmt(b.throughput_per_s)}</b></div><div class="stat">ETA<b>${b.eta_seconds ? fmt(b.eta_seconds, 0) + " s" : "–"}</b></div>
      </div>
      <p class="muted">${esc(b.model_name)} ${esc(b.model_version)} · ${esc(b.method)} · labels ${esc(b.labels)} · ${b.total_entries} entries, ${b.skipped_entries} skipped · created ${when(b.created_at)}</p>`;
    document.getElementById("cancel").disabled = !["ingesting", "queued", "running"].includes(b.status);
    document.getElementById("retry").disabled = c.failed === 0 || ["ingesting", "cancelled"].includes(b.status);
    const codes = Object.entries(report.errors_by_code).map(([k, v]) => `<code>${esc(k)}</code> ${v}`).join(" · ") || "no errors";
    const warns = Object.entries(report.warnings_by_code).map(([k, v]) => `<code>${esc(k)}</code> ${v}`).join(" · ") || "no warnings";
    document.getElementById("report").innerHTML = `<p>${codes}<br>${warns}</p>` + (report.errors.length ? `<table><thead><tr><th>#</th><th>entry</th><th>code</th><th>message</th></tr></thead><tbody>${report.errors.map((e) => `<tr><td>${e.entry_index}</td><td>${esc(e.entry_name)}</td><td><code>${esc(e.code)}</code></td><td>${esc(e.message)}</td></tr>`).join("")}</tbody></table>` : "");
    document.querySelector("#results tbody").innerHTML = page.items.map((r) => {
      const cam = r.cams?.[0];
      return `<tr><td>${r.entry_index}</td><td>${esc(r.entry_name)}</td><td class="status ${r.status}">${r.status}</td>
        <td>${r.overlay_url && may.pixels() ? `<img class="thumb" loading="lazy" src="${r.overlay_url}" data-item="${r.item_id}" data-label="${esc(cam?.label)}" alt="overlay">` : ""}</td>
        <td>${finding(r)}</td><td class="num">${fmt(r.top_probability, 3)}</td>
        <td>${cam?.peak ? cam.peak.join(", ") : ""}</td><td>${cam?.bbox ? cam.bbox.join(", ") : ""}</td>
        <td>${distribution(r)}</td><td>${faithfulness(cam)}</td>
        <td class="num">${fmt(r.processing_ms, 0)}</td><td class="muted">${esc(r.worker_id)}</td></tr>`;
    }).join("");
    document.querySelectorAll("img.thumb").forEach((img) => (img.onclick = () => enlarge(id, img.dataset.item, img.dataset.label)));
    if (["succeeded", "completed_with_errors", "failed", "cancelled"].includes(b.status)) clearInterval(timer);
  };
  await refresh().catch((e) => (view.innerHTML = `<p class="error">${esc(e.message)}</p>`));
  timer = setInterval(() => refresh().catch(() => {}), 2000);
}

// What the model found: the labels past their thresholds, or "no finding" said plainly rather
// than a near-zero top label presented as one.
function finding(r) {
  if (r.status !== "succeeded") return "";
  if (!r.positive_labels) return esc(r.top_label);
  if (r.positive_labels.length === 0) return `<span class="no-finding">no finding</span> <span class="muted">(top ${esc(r.top_label)})</span>`;
  return r.positive_labels.map(esc).join(", ");
}

function distribution(r) {
  if (r.status !== "succeeded") return "";
  if (r.ood_score == null) return `<span class="muted" title="the model bundle has no reference of its training images">unavailable</span>`;
  const score = `${fmt(r.ood_score, 1)} / ${fmt(r.ood_threshold, 1)}`;
  return r.out_of_distribution ? `<span class="ood">out of distribution</span> <span class="muted">${score}</span>` : `<span class="muted">in (${score})</span>`;
}

function faithfulness(cam) {
  const f = cam?.faithfulness;
  if (!f) return "";
  const parts = [`drop ${fmt(f.confidence_drop * 100, 0)}%${f.confidence_increase ? " ↑" : ""}`];
  if (f.deletion_auc != null) parts.push(`del ${fmt(f.deletion_auc, 2)} · ins ${fmt(f.insertion_auc, 2)}`);
  return `<span class="faithfulness">${parts.join(" · ")}</span>`;
}

function enlarge(batch, item, label) {
  document.getElementById("modal-original").src = `/v1/batches/${batch}/items/${item}/image.png`;
  document.getElementById("modal-overlay").src = `/v1/batches/${batch}/items/${item}/overlay.png`;
  document.getElementById("modal-caption").textContent = `Grad-CAM: ${label}`;
  document.getElementById("modal").classList.remove("hidden");
}
document.addEventListener("click", (e) => {
  if (e.target.id === "modal" || e.target.id === "modal-close") document.getElementById("modal").classList.add("hidden");
});

// ---------------------------------------------------------------- operations

async function opsPage() {
  view.innerHTML = `
    <h1>Operations</h1>
    <div class="row card">
      <label>Since <input id="since" value="7d" size="8"></label>
      <label>Bucket <select id="bucket"><option>hour</option><option selected>day</option></select></label>
      <button id="apply">Apply</button>
    </div>
    <div class="stats" id="totals"></div>
    <div class="charts">
      <div class="chart-box"><canvas id="chart-counts"></canvas></div>
      <div class="chart-box"><canvas id="chart-latency"></canvas></div>
      <div class="chart-box"><canvas id="chart-predictions"></canvas></div>
    </div>
    <h2 ${may.fleet() ? "" : "hidden"}>Workers</h2><table id="workers" ${may.fleet() ? "" : "hidden"}><thead><tr><th>worker</th><th>host</th><th>device</th><th>models</th><th class="num">done</th><th class="num">failed</th><th class="num">clock ms</th><th>last seen</th></tr></thead><tbody></tbody></table>
    <h2>Inference log</h2>
    <form id="log-filters" class="row card">
      ${["since", "until", "model", "status", "batch", "worker", "label", "min_ms"].map((f) => `<label>${f}<input name="${f}" size="10" ${f === "since" ? 'value="24h"' : ""}></label>`).join("")}
      <label>limit<input name="limit" value="100" size="5"></label>
      <button type="submit">Filter</button><a class="button secondary" id="log-csv" download>CSV</a>
    </form>
    <table id="log"><thead><tr><th>time</th><th>model</th><th>status</th><th>prediction</th><th class="num">p</th><th class="num">ms</th><th class="num">try</th><th>worker</th><th>file</th><th>error</th></tr></thead><tbody></tbody></table>`;
  document.getElementById("apply").onclick = () => drawCharts().catch(showError);
  document.getElementById("log-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    loadLog().catch(showError);
  });
  await Promise.all([drawCharts(), loadLog(), may.fleet() ? loadWorkers() : null]).catch(showError);
  if (may.fleet()) timer = setInterval(() => loadWorkers().catch(() => {}), 5000);
}

function showError(e) {
  view.insertAdjacentHTML("afterbegin", `<p class="error">${esc(e.message)}</p>`);
}

async function drawCharts() {
  const since = document.getElementById("since").value;
  const bucket = document.getElementById("bucket").value;
  const s = await api(`/v1/stats?since=${encodeURIComponent(since)}&bucket=${bucket}`);
  document.getElementById("totals").innerHTML = `
    <div class="stat">inferences<b id="total-inferences">${s.inferences}</b></div>
    <div class="stat">failed<b>${s.failures}</b></div>
    <div class="stat">error rate<b>${fmt(s.error_rate * 100)}%</b></div>
    ${s.models.map((m) => `<div class="stat model-latency">${esc(m.model)} p50 / p95 ms<b>${fmt(m.p50_ms, 0)} / ${fmt(m.p95_ms, 0)}</b></div>`).join("")}`;
  charts.splice(0).forEach((c) => c.destroy());
  const labels = s.buckets.map((b) => new Date(b.bucket).toLocaleString([], bucket === "hour" ? { month: "short", day: "numeric", hour: "2-digit" } : { month: "short", day: "numeric" }));
  const line = (id, title, datasets) => charts.push(new Chart(document.getElementById(id), {
    type: "line", data: { labels, datasets }, options: { maintainAspectRatio: false, animation: false, plugins: { title: { display: true, text: title } }, scales: { y: { beginAtZero: true } } },
  }));
  line("chart-counts", `Inferences per ${bucket}`, [
    { label: "inferences", data: s.buckets.map((b) => b.inferences), borderColor: "#2457d6", backgroundColor: "#2457d6" },
    { label: "failed", data: s.buckets.map((b) => b.failures), borderColor: "#c0392b", backgroundColor: "#c0392b" },
  ]);
  // Latency per model: one model's 60 ms and another's 1 300 ms never share a percentile.
  const palette = ["#2457d6", "#1b8a4b", "#b7791f", "#c0392b", "#7b3fb5", "#16808a"];
  line("chart-latency", "Latency per model (ms)", s.models.flatMap((m, i) => {
    const at = new Map(m.buckets.map((b) => [b.bucket, b]));
    const color = palette[i % palette.length];
    return [
      { label: `${m.model} p50`, data: s.buckets.map((b) => at.get(b.bucket)?.p50_ms ?? null), borderColor: color, backgroundColor: color },
      { label: `${m.model} p95`, data: s.buckets.map((b) => at.get(b.bucket)?.p95_ms ?? null), borderColor: color, backgroundColor: color, borderDash: [6, 4] },
    ];
  }));
  const models = Object.keys(s.predictions);
  const allLabels = [...new Set(models.flatMap((m) => Object.keys(s.predictions[m])))];
  charts.push(new Chart(document.getElementById("chart-predictions"), {
    type: "bar",
    data: { labels: allLabels, datasets: models.map((m, i) => ({ label: m, data: allLabels.map((l) => s.predictions[m][l] || 0), backgroundColor: palette[i % palette.length] })) },
    options: { maintainAspectRatio: false, animation: false, plugins: { title: { display: true, text: "Top predictions per model" } } },
  }));
}

async function loadLog() {
  const params = new URLSearchParams();
  new FormData(document.getElementById("log-filters")).forEach((value, key) => value && params.set(key, value));
  document.getElementById("log-csv").href = `/v1/logs?${params}&format=csv`;
  const page = await api(`/v1/logs?${params}`);
  document.querySelector("#log tbody").innerHTML = page.entries.map((e) => `
    <tr><td>${when(e.ts)}</td><td>${esc(e.model_name)}</td><td class="status ${e.status}">${e.status}</td><td>${esc(e.prediction)}</td>
    <td class="num">${fmt(e.probability, 3)}</td><td class="num">${fmt(e.processing_time_ms, 0)}</td><td class="num">${e.attempt}</td>
    <td class="muted">${esc(e.worker_id)}</td><td>${esc(e.filename)}</td><td>${e.error_code ? `<code>${esc(e.error_code)}</code>` : ""}</td></tr>`).join("") || `<tr><td colspan="10" class="muted">No entries match.</td></tr>`;
}

async function loadWorkers() {
  const workers = await api("/v1/workers");
  document.querySelector("#workers tbody").innerHTML = workers.map((w) => `
    <tr><td><code>${esc(w.id)}</code></td><td>${esc(w.host)}</td><td>${esc(w.device)}</td><td>${esc(w.models.join(", "))}</td>
    <td class="num">${w.jobs_done}</td><td class="num">${w.jobs_failed}</td><td class="num" title="this worker's clock minus Postgres's">${fmt(w.clock_skew_ms, 0)}</td><td>${when(w.last_seen)}</td></tr>`).join("") || `<tr><td colspan="8" class="muted">No live workers.</td></tr>`;
}
