// Run detail: status, live curves over SSE, log tail, spec, summary, downloads, actions.
import { api, ApiError, download, events, markReady, retryable, retryRun, showBanner } from "./api.js";
import { clipSpikes, COLORS, draw, layout, line, median, plotlyReady, wantsLog } from "./charts.js";
import { badge, el, fmtAgo, fmtBytes, fmtNum, fmtPct, fmtRatio, fmtSecs, progress, fmtDuration, DASH } from "./format.js";

const RUN_ID = Number(document.getElementById("run-head").dataset.runId);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// While a run trains the worker keeps a partial summary; only a finished run's summary is final.
const finalSummary = () => (run && FINAL.has(run.status) ? run.summary : null);
const MAX_POINTS = 1000;
const LOG_LINES = 500;

const series = {}; // name -> {step: [], value: []}
let run = null;
let source = null;
let redrawPending = false;
let specShown = false;

// ---------------------------------------------------------------- charts
function boundaries() {
  const found = new Set();
  for (const name of Object.keys(series)) {
    const m = /^wire\/b(\d+)\//.exec(name);
    if (m) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

function perBoundary(what, label, mode = "lines") {
  const traces = [];
  for (const b of boundaries()) {
    for (const [dir, dash] of [["fwd", undefined], ["bwd", "dot"]]) {
      const s = series[`wire/b${b}/${what}_${dir}`];
      if (s) traces.push(line(`${label} b${b} ${dir}`, s, { color: COLORS[b % COLORS.length], dash, mode }));
    }
  }
  return traces;
}

function present(specs) {
  return specs.filter(([name]) => series[name]).map(([name, label, opts]) => line(label, series[name], opts));
}

function drawCharts() {
  redrawPending = false;
  if (run && !finalSummary()) renderCards(liveSummary(), !FINAL.has(run.status));
  // A finished run that recorded nothing gets one sentence, not six empty charts.
  const nothing = run && FINAL.has(run.status) && !Object.keys(series).length;
  document.getElementById("charts").hidden = nothing;
  document.getElementById("no-metrics").hidden = !nothing;
  if (nothing) {
    document.getElementById("no-metrics").textContent = `No metrics were recorded: the run ${{ succeeded: "finished", failed: "failed", cancelled: "was cancelled" }[run.status]} before its first step.`;
    return;
  }
  if (!window.Plotly) {
    plotlyReady().then(drawCharts);
    return;
  }
  draw("chart-loss", present([
    ["train/loss", "train", { color: COLORS[0] }],
    ["val/loss", "val", { color: COLORS[1], mode: "lines+markers" }],
    ["val_dense/loss", "val (dense eval)", { color: COLORS[2], dash: "dash", mode: "lines+markers" }],
  ]), layout("Loss", { yTitle: "loss" }));
  draw("chart-acc", present([
    ["train/acc", "train", { color: COLORS[0] }],
    ["val/acc", "val", { color: COLORS[1], mode: "lines+markers" }],
    ["val_dense/acc", "val (dense eval)", { color: COLORS[2], dash: "dash", mode: "lines+markers" }],
  ]), layout("Accuracy", { yTitle: "%" }));
  const wire = perBoundary("bytes", "wire");
  if (!wire.length) wire.push(...present([["wire/bytes_fwd", "forward", { color: COLORS[0] }], ["wire/bytes_bwd", "backward", { color: COLORS[1], dash: "dot" }]]));
  draw("chart-wire", wire, layout("Wire bytes per step", { yTitle: "bytes", logY: wantsLog(wire) }));
  const ratio = perBoundary("ratio", "ratio");
  ratio.push(...present([["wire/ratio", "overall", { color: "#111827", width: 2.2 }]]));
  draw("chart-ratio", ratio, layout("Compression ratio (dense fp32 / wire)", { yTitle: "×" }));
  const time = present([
    ["time/batch_s", "time per batch", { color: COLORS[0] }],
    ["link/time_s", "link time (modelled)", { color: COLORS[3], dash: "dash" }],
  ]);
  const timeLayout = layout("Time per batch", { yTitle: "s" });
  clipSpikes(time, timeLayout);
  draw("chart-time", time, timeLayout);
  // errors are measured on some steps only by the distributed runner: markers show which
  const err = perBoundary("err", "error", "lines+markers");
  draw("chart-err", err, layout("Reconstruction error (relative)", { yTitle: "‖x̂ − x‖ / ‖x‖", logY: wantsLog(err) }));
  draw("chart-cos", perBoundary("cos", "cos", "lines+markers"), layout("Cosine to the dense tensor", { yTitle: "cos(x̂, x)" }));
}

// Until the engine writes the summary, the cards show the same figures read off the live series.
function liveSummary() {
  const last = (name) => (series[name] ? series[name].value[series[name].value.length - 1] : undefined);
  // as the summary will: the median of the latest steps, the session's first (it warms up) left out
  const steady = (name, n) => (series[name] ? median(series[name].value.slice(1).slice(-n)) ?? series[name].value[0] : undefined);
  const acc = series["val/acc"] ? series["val/acc"].value.filter((x) => x != null) : [];
  const fwd = last("wire/bytes_fwd"), bwd = last("wire/bytes_bwd");
  return {
    best_val_acc: acc.length ? acc.reduce((a, b) => Math.max(a, b)) : undefined,
    final_val_acc: last("val/acc"),
    wire_bytes_per_step: fwd !== undefined || bwd !== undefined ? (fwd || 0) + (bwd || 0) : undefined,
    compression_ratio: last("wire/ratio"),
    time_per_batch_s: steady("time/batch_s", 20),
    link_time_per_step_s: last("link/time_s"),
  };
}

function scheduleRedraw() {
  if (redrawPending) return;
  redrawPending = true;
  setTimeout(drawCharts, 500);
}

function addPoints(points) {
  for (const p of points) {
    const s = (series[p.name] ||= { step: [], value: [] });
    const last = s.step.length ? s.step[s.step.length - 1] : -Infinity;
    if (p.step > last) {
      s.step.push(p.step);
      s.value.push(p.value);
    } else if (p.step === last) {
      s.value[s.value.length - 1] = p.value;
    }
  }
  scheduleRedraw();
}

// ---------------------------------------------------------------- header, summary, error
function renderRun(r) {
  run = { ...(run || {}), ...r };
  renderNotes(run);
  document.title = `${run.name} · slimpipe`;
  document.getElementById("run-name").textContent = `${run.name}`;
  document.getElementById("run-status").replaceWith(Object.assign(badge(run.status), { id: "run-status" }));
  // Built as nodes, never as HTML: sweep values, names and hosts are whatever was submitted.
  const bits = [`#${run.id}`];
  if (run.experiment_id) bits.push(["experiment ", el("a", { href: `/experiments/${run.experiment_id}` }, `#${run.experiment_id}`)]);
  for (const [k, v] of Object.entries(run.sweep_values || {})) bits.push(el("code", {}, `${k}=${JSON.stringify(v)}`));
  if (run.worker_host) bits.push(`on ${run.worker_host}`);
  if (run.attempt > 1)
    bits.push([`attempt ${run.attempt}`, ...(run.retry_of ? [" (retry of ", el("a", { href: `/runs/${run.retry_of}` }, `#${run.retry_of}`), ")"] : [])]);
  bits.push(`created ${fmtAgo(run.created_at)}`);
  document.getElementById("run-sub").replaceChildren(...bits.flatMap((bit, i) => (i ? [" · ", bit] : [bit])).flat());

  const p = progress(run);
  document.getElementById("run-progress-bar").style.width = `${(p.frac * 100).toFixed(1)}%`;
  document.getElementById("run-progress-bar").className = `bar ${run.status}`;
  document.getElementById("run-progress-text").textContent =
    (p.total ? `step ${p.step.toLocaleString()} / ${p.total.toLocaleString()}` : "") + (p.eta !== null ? ` · ETA ${fmtDuration(p.eta)}` : "");

  document.getElementById("cancel-button").hidden = FINAL.has(run.status);
  document.getElementById("retry-button").hidden = !(run.status === "failed" || run.status === "cancelled");
  // Runs whose spec saves checkpoints; the server answers 404 (shown as a banner) where it holds none.
  document.getElementById("download-checkpoint").hidden = !run.spec?.train?.checkpoint_every;

  const panel = document.getElementById("error-panel");
  panel.hidden = !(run.status === "failed" || (run.status === "cancelled" && run.error));
  if (!panel.hidden) {
    panel.querySelector("h2").textContent = run.status === "failed" ? "Run failed" : "Run cancelled";
    document.getElementById("error-message").textContent = run.error || "no reason was recorded";
    const tb = document.getElementById("error-traceback");
    tb.textContent = run.traceback || "";
    tb.parentElement.hidden = !run.traceback;
  }
  if (run.spec && !specShown) {
    specShown = true;
    api("/runs/" + RUN_ID + "/spec.yaml", { raw: true })
      .then((r) => r.text())
      .then((t) => (document.getElementById("run-spec").textContent = t))
      .catch(() => (document.getElementById("run-spec").textContent = JSON.stringify(run.spec, null, 2)));
  }
  renderSummary(finalSummary() || {});
}

// Summary values with their units, chosen by the key's name; the raw number is in the tooltip.
function fmtSummary(key, v) {
  if (typeof v !== "number") return JSON.stringify(v);
  if (/acc$/.test(key)) return fmtPct(v);
  if (/bytes/.test(key)) return fmtBytes(v);
  if (/ratio$/.test(key)) return fmtRatio(v);
  if (/_s$/.test(key)) return fmtSecs(v);
  return fmtNum(v, 6);
}

// One step of the pipeline as a Gantt chart: a bar per forward/backward action, one row per stage.
function gantt(divId, events, title) {
  const traces = ["F", "B"].map((op, k) => {
    const mine = events.filter((e) => e[1] === op);
    return {
      type: "bar", orientation: "h", name: op === "F" ? "forward" : "backward", marker: { color: COLORS[k] },
      y: mine.map((e) => `stage ${e[0]}`), base: mine.map((e) => e[3] * 1e3), x: mine.map((e) => Math.max((e[4] - e[3]) * 1e3, 0.01)),
      text: mine.map((e) => `${e[0]}${op}${e[2]}`), textposition: "inside", insidetextanchor: "middle",
      hovertemplate: "%{text}: %{base:.2f} → %{customdata:.2f} ms<extra></extra>",
      customdata: mine.map((e) => e[4] * 1e3),
    };
  });
  const stages = [...new Set(events.map((e) => e[0]))].sort((a, b) => a - b).map((j) => `stage ${j}`);
  draw(divId, traces, layout(title, { xTitle: "ms from the step's start", extra: {
    barmode: "overlay", yaxis: { categoryorder: "array", categoryarray: stages.reverse(), gridcolor: "#eef1f4" } } }));
}

function drawTimeline(s) {
  const panel = document.getElementById("timeline-panel");
  const t = s && s.timeline;
  panel.hidden = !t || !t.modelled || !t.modelled.length;
  if (panel.hidden) return;
  plotlyReady().then(() => {
    const measured = t.measured && t.measured.length;
    document.getElementById("chart-timeline-measured").hidden = !measured;
    if (measured) gantt("chart-timeline-measured", t.measured, `Measured, step ${t.step} (stage processes, wall clock)`);
    gantt("chart-timeline-modelled", t.modelled, `Modelled, step ${t.step} (one device per stage, the spec's link)`);
    document.getElementById("timeline-note").textContent = measured
      ? "the distributed runner's stages as they ran, beside the replay of the same step's action times"
      : "the in-process runner's replay; a distributed run also shows the measured timeline";
  }).catch(() => {});
}

function renderSummary(s) {
  if (!finalSummary() && Object.keys(series).length) renderCards(liveSummary(), !FINAL.has(run.status));
  else renderCards(s, false);
  // The engine may add its own keys (stages, device, the frozen spec); the spec has its own panel.
  drawTimeline(finalSummary());
  const rows = Object.entries(s)
    .filter(([k]) => !["spec", "timeline", "replay"].includes(k))
    .map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { class: typeof v === "number" ? "num mono" : "mono wrap", title: typeof v === "number" ? String(v) : null, text: fmtSummary(k, v) })));
  document.getElementById("summary-table").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted", text: FINAL.has(run.status) ? "no summary was recorded" : "written when the run finishes" }))]));
}

function renderCards(s, live) {
  const box = document.getElementById("summary-cards");
  const empty = Object.values(s).every((v) => v === undefined || v === null);
  box.hidden = empty && run && FINAL.has(run.status);
  const cards = [
    ["best_val_acc", "Best val acc", fmtPct(s.best_val_acc)],
    ["final_val_acc", "Final val acc", fmtPct(s.final_val_acc)],
    ["wire_bytes_per_step", "Wire / step", fmtBytes(s.wire_bytes_per_step)],
    ["compression_ratio", "Compression", fmtRatio(s.compression_ratio)],
    ["time_per_batch_s", "Time / batch", fmtSecs(s.time_per_batch_s)],
    ["link_time_per_step_s", "Link time / step", fmtSecs(s.link_time_per_step_s)],
  ];
  box.replaceChildren(
    ...cards.map(([key, k, v]) => el("div", { class: "stat card", "data-stat": key },
      el("div", { class: "stat-label" }, k, live ? el("span", { class: "live", title: "from the live series; the summary replaces it at the end", text: "live" }) : null),
      el("div", { class: "stat-value", text: v }))),
  );
}

// ---------------------------------------------------------------- log tail
const logBox = document.getElementById("log-tail");
let lastLogId = 0;
function addLogLines(lines) {
  // The event stream replays from the start; lines already shown are skipped by id.
  lines = lines.filter((l) => l.id === undefined || l.id > lastLogId);
  if (!lines.length) return;
  lastLogId = lines.reduce((m, l) => Math.max(m, l.id || 0), lastLogId);
  const text = lines.map((l) => `${(l.time || "").slice(11, 19)} ${(l.level || "").padEnd(5)} ${l.message}`).join("\n");
  logBox.append(document.createTextNode((logBox.textContent ? "\n" : "") + text));
  // Keep the tail short: drop the oldest text once the box holds many lines.
  if (logBox.childNodes.length > 100) logBox.textContent = logBox.textContent.split("\n").slice(-LOG_LINES).join("\n");
  if (document.getElementById("log-follow").checked) logBox.scrollTop = logBox.scrollHeight;
}

// ---------------------------------------------------------------- live
function follow() {
  source = events(`/runs/${RUN_ID}/events`, {
    metrics: (d) => addPoints(d.points || []),
    status: (r) => {
      if (r.status === "deleted") {
        showBanner(`Run ${RUN_ID} was deleted.`);
        source.close();
        return;
      }
      renderRun(r);
      if (FINAL.has(r.status)) refreshFinal();
    },
    log: (d) => addLogLines(d.lines || []),
  }, () => {
    // The stream is opened again until the run is over.
    if (run && FINAL.has(run.status)) source.close();
  });
}

// ---------------------------------------------------------------- diagnose
async function loadDiagnosis() {
  const d = await api(`/runs/${RUN_ID}/diagnose`).catch(() => null);
  if (!d) return;
  document.getElementById("diagnose-cause").replaceChildren(el("strong", { text: "Likely cause: " }), d.likely_cause);
  document.getElementById("diagnose-findings").replaceChildren(...d.findings.map((f) => el("li", { text: f })));
  const rows = d.channels.map((c) =>
    el("tr", {}, el("th", { text: `boundary ${c.boundary} ${c.direction}` }),
      el("td", { text: `error ${c.rel_error === null ? DASH : c.rel_error.toFixed(3)} · cosine ${c.cosine === null ? DASH : c.cosine.toFixed(3)}` })));
  document.getElementById("diagnose-channels").replaceChildren(...rows);
}
document.getElementById("diagnose-refresh").addEventListener("click", loadDiagnosis);

async function refreshFinal() {
  // The summary lands with the final status; fetch the full row (spec, traceback) and the series once more.
  try {
    renderRun(await api(`/runs/${RUN_ID}`));
    await loadSeries();
    drawCharts();
    loadDiagnosis();
  } catch {}
  if (source) setTimeout(() => source && source.close(), 3000);
}

// Series in parallel requests, one per chart group, so the server reads them side by side. The loss and
// accuracy names are known up front; the rest come from metric-names. plotly.js compiles after they are sent.
const LOSS = ["train/loss", "val/loss", "val_dense/loss"];
const ACC = ["train/acc", "val/acc", "val_dense/acc"];
const LATER = [/^wire\/(b\d+\/)?bytes/, /^wire\/(b\d+\/)?ratio/];
async function fetchSeries(names) {
  const metrics = await api(`/runs/${RUN_ID}/metrics`, { query: { names: names.join(","), max_points: MAX_POINTS } }).catch(() => null);
  if (!metrics) return;
  for (const [name, s] of Object.entries(metrics.series)) if (s.step.length) series[name] = { step: s.step.slice(), value: s.value.slice() };
}
async function loadSeries() {
  const first = [fetchSeries(LOSS), fetchSeries(ACC)];
  const names = await api(`/runs/${RUN_ID}/metric-names`).catch(() => []);
  const groups = LATER.map(() => []).concat([[]]); // the last group takes every other series
  for (const name of names) {
    if (LOSS.includes(name) || ACC.includes(name)) continue;
    const i = LATER.findIndex((re) => re.test(name));
    groups[i === -1 ? LATER.length : i].push(name);
  }
  const rest = groups.filter((g) => g.length).map(fetchSeries);
  plotlyReady();
  await Promise.all([...first, ...rest]);
}

async function load() {
  // Row, series and log in parallel: the series read is the slow one.
  const seriesLoaded = loadSeries();
  const logsLoaded = api(`/runs/${RUN_ID}/logs`, { query: { format: "json" } }).catch(() => null);
  let r;
  try {
    r = await api(`/runs/${RUN_ID}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      document.querySelector("main").replaceChildren(el("div", { class: "card empty-state" }, el("h2", { text: `Run ${RUN_ID} not found` }), el("p", {}, "It may have been deleted. ", el("a", { href: "/" }, "Back to runs."))));
    } else if (!retryable(err)) showBanner(`Could not load run ${RUN_ID}: ${err.message}`);
    else setTimeout(load, 3000);
    return;
  }
  renderRun(r);
  loadDiagnosis();
  const [, logs] = await Promise.all([seriesLoaded, logsLoaded, plotlyReady()]);
  drawCharts();
  if (logs) addLogLines(logs.lines.slice(-LOG_LINES));
  if (!logBox.textContent && FINAL.has(run.status)) logBox.textContent = "(the run wrote no log lines)";
  markReady();
  if (!FINAL.has(run.status)) follow();
}

// ---------------------------------------------------------------- tags and notes
// Editable in any state. The run's live updates fill them only while the user has not started editing.
const tagsInput = document.getElementById("run-tags");
const notesInput = document.getElementById("run-notes");
const notesSave = document.getElementById("notes-save");
const notesStatus = document.getElementById("notes-status");
let notesDirty = false;

function growNotes() {
  notesInput.style.height = "auto";
  notesInput.style.height = `${Math.min(notesInput.scrollHeight + 2, 400)}px`;
}

function renderNotes(r) {
  if (notesDirty) return;
  tagsInput.value = (r.tags || []).join(", ");
  if (r.notes !== undefined) notesInput.value = r.notes || "";
  growNotes();
}

function editedNotes() {
  notesDirty = true;
  notesSave.disabled = false;
  notesStatus.textContent = "";
  growNotes();
}
// Unsaved notes are not lost to a closed tab or a link followed by mistake: the browser asks first.
window.addEventListener("beforeunload", (e) => {
  if (notesDirty) e.preventDefault();
});
tagsInput.addEventListener("input", editedNotes);
notesInput.addEventListener("input", editedNotes);
notesInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) notesSave.click();
});
notesSave.addEventListener("click", async () => {
  const tags = [...new Set(tagsInput.value.split(",").map((t) => t.trim()).filter(Boolean))];
  notesSave.disabled = true;
  notesStatus.textContent = "saving…";
  try {
    const saved = await api(`/runs/${RUN_ID}`, { method: "PATCH", body: { tags, notes: notesInput.value } });
    notesDirty = false;
    renderRun(saved);
    notesStatus.textContent = "saved";
  } catch (err) {
    notesSave.disabled = false;
    const detail = Array.isArray(err.detail) ? err.detail.map((d) => `${d.field}: ${d.message}`).join("; ") : err.message;
    notesStatus.textContent = `not saved: ${detail}`;
  }
});

// ---------------------------------------------------------------- buttons
const act = (label, fn) => async () => {
  try {
    await fn();
  } catch (err) {
    showBanner(`${label} failed: ${err.message}`);
  }
};
document.getElementById("cancel-button").addEventListener("click", act("Cancel", async () => renderRun(await api(`/runs/${RUN_ID}/cancel`, { method: "POST" }))));
document.getElementById("retry-button").addEventListener("click", act("Retry", async () => {
  const r = await retryRun(RUN_ID);
  location.href = `/runs/${r.id}`;
}));
document.getElementById("delete-button").addEventListener("click", act("Delete", async () => {
  if (!confirm(`Delete run ${RUN_ID}? Its metrics, logs and checkpoints go too.`)) return;
  await api(`/runs/${RUN_ID}`, { method: "DELETE" });
  location.href = "/";
}));
for (const button of document.querySelectorAll("[data-download]")) {
  const what = button.dataset.download;
  button.addEventListener("click", act("Download", () => download(`/runs/${RUN_ID}/${what}`, `run-${RUN_ID}-${what}`)));
}

load();
