// Compare: the table of differing fields and results, overlaid curves, acc-vs-bytes scatter with its Pareto front.
import { api, download, markReady, retryable, showBanner } from "./api.js";
import { clipSpikes, COLORS, draw, layout, line, paretoFront, plotlyReady } from "./charts.js";
import { groupLabel, groupRuns, meanTraces, shortAxis } from "./study.js";
import { badge, el, fmtBytes, fmtDelta, fmtPct, fmtRatio, fmtSecs, fmtValue, DASH } from "./format.js";

const head = document.getElementById("compare-head");
const RUN_IDS = head.dataset.runIds.split(",").filter(Boolean).map(Number);
const MAX_POINTS = 400;
const baselineSelect = document.getElementById("baseline-select");
let table = null;

// A run's short label: what differs about it (e.g. "backward.topk=0.5"), else its name.
function label(r) {
  const parts = (table.varying_fields || []).map((f) => `${shortAxis(f)}=${fmtValue((r.differences || {})[f])}`);
  return parts.length && parts.join(", ").length < 48 ? parts.join(", ") : r.name;
}

// Long config values (stage lists, option dicts) are cut in the cell; the full value is on hover.
const SHORT = 28;
const shortValue = (v) => {
  const text = fmtValue(v);
  return text.length > SHORT ? `${text.slice(0, SHORT - 1)}…` : text;
};

// A cell's full value on hover; the preset's cell also lists the fields it sets that differ between the runs.
function cellTitle(r, f) {
  const d = r.differences || {};
  const text = `${f} = ${fmtValue(d[f])}`;
  const implied = f === "compression.preset" ? table.implied_fields || [] : [];
  return implied.length ? `${text}, which sets ${implied.map((p) => `${shortAxis(p)}=${fmtValue(d[p])}`).join(", ")}` : text;
}

// Outcome columns first, then the config fields that differ between the runs.
function renderTable() {
  const varying = table.varying_fields || [];
  const thead = document.querySelector("#compare-table thead");
  const tbody = document.querySelector("#compare-table tbody");
  thead.replaceChildren(
    el("tr", {},
      el("th", { text: "Run" }), el("th", { text: "Status" }),
      ["Best val acc", "Final val acc", "Δ vs baseline", "Wire/step", "Ratio", "Time/batch", "Speed-up"].map((h) => el("th", { class: "num", text: h })),
      varying.map((f) => el("th", { class: "diff", title: f, text: shortAxis(f) })),
    ),
  );
  const best = Math.max(...table.runs.map((r) => r.best_val_acc ?? -Infinity));
  tbody.replaceChildren(
    ...table.runs.map((r, i) =>
      el("tr", { "data-run-id": r.run_id, class: r.run_id === table.baseline_run_id ? "baseline" : "" },
        el("td", { class: "nowrap" }, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
          el("a", { href: `/runs/${r.run_id}`, class: "run-id", text: `#${r.run_id}` }), " ", el("a", { href: `/runs/${r.run_id}`, text: r.name }),
          r.run_id === table.baseline_run_id ? el("span", { class: "tag", text: "baseline" }) : null,
          (r.tags || []).map((t) => el("span", { class: "tag muted-tag", text: t })),
          r.notes ? el("div", { class: "run-notes small muted", title: r.notes, text: r.notes }) : null),
        el("td", {}, badge(r.status)),
        el("td", { class: `num${r.best_val_acc === best ? " best" : ""}`, "data-col": "best_val_acc" }, fmtPct(r.best_val_acc)),
        el("td", { class: "num", "data-col": "final_val_acc" }, fmtPct(r.final_val_acc)),
        el("td", { class: `num ${r.delta_val_acc < 0 ? "neg" : r.delta_val_acc > 0 ? "pos" : ""}`, "data-col": "delta_val_acc" }, fmtDelta(r.delta_val_acc)),
        el("td", { class: "num", "data-col": "wire_bytes_per_step", title: r.wire_bytes_per_step == null ? null : `${Math.round(r.wire_bytes_per_step).toLocaleString("en-US")} bytes` }, fmtBytes(r.wire_bytes_per_step)),
        el("td", { class: "num", "data-col": "compression_ratio" }, fmtRatio(r.compression_ratio)),
        el("td", { class: "num", "data-col": "time_per_batch_s" }, fmtSecs(r.time_per_batch_s)),
        el("td", { class: "num", "data-col": "speedup" }, r.speedup == null ? DASH : `${r.speedup.toFixed(2)}×`),
        varying.map((f) => el("td", { class: "mono diff", "data-field": f, title: cellTitle(r, f), text: shortValue((r.differences || {})[f]) })),
      ),
    ),
  );
  const base = table.runs.find((r) => r.run_id === table.baseline_run_id);
  document.getElementById("compare-sub").textContent =
    `${table.runs.length} runs · baseline: ${base ? base.name : "none (no uncompressed run of the same experiment; pick one)"}`;
}

const PARETO_LABEL_ALL = 8;

function drawPareto() {
  const varying = table.varying_fields || [];
  // On the scatter a point is labelled by its differing values alone; the axis names go in the title.
  const pointLabel = (r) => (varying.length ? varying.map((f) => fmtValue((r.differences || {})[f])).join(", ") : r.name);
  const points = table.runs.map((r, i) => ({ x: r.wire_bytes_per_step, y: r.best_val_acc, name: pointLabel(r), full: label(r), i }));
  const valid = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const front = paretoFront(valid);
  const onFront = new Set(front.map((p) => p.i));
  // Labels sit on the side of the point that faces the middle of the plot, and both axes are padded, so
  // no label is cut at an edge.
  const xs = valid.map((p) => Math.log10(p.x)), ys = valid.map((p) => p.y);
  const [xlo, xhi, ylo, yhi] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const xpad = Math.max(0.25, (xhi - xlo) * 0.2), ypad = Math.max(1, (yhi - ylo) * 0.15);
  const side = (p) => `${p.y > (ylo + yhi) / 2 ? "bottom" : "top"} ${Math.log10(p.x) > (xlo + xhi) / 2 ? "left" : "right"}`;
  // A few runs: every point is labelled, off-front ones in grey; past PARETO_LABEL_ALL, only the front is
  // (the rest on hover), or the labels would pile up.
  const labelled = (p) => onFront.has(p.i) || valid.length <= PARETO_LABEL_ALL;
  const traces = valid.map((p) => ({
    type: "scatter", mode: labelled(p) ? "markers+text" : "markers", name: p.name, x: [p.x], y: [p.y], text: [p.name], textposition: side(p),
    textfont: { size: 10, color: onFront.has(p.i) ? "#111827" : "#6b7280" }, cliponaxis: false, marker: { size: 11, color: COLORS[p.i % COLORS.length], line: { width: 1, color: "#fff" } },
    hovertemplate: `${p.full}<br>%{x:.4s}B/step<br>%{y:.2f}%<extra></extra>`, showlegend: false,
  }));
  if (front.length) traces.push({ type: "scatter", mode: "lines", name: "Pareto front", x: front.map((p) => p.x), y: front.map((p) => p.y),
    line: { color: "#111827", dash: "dash", width: 1.5, shape: "hv" }, hoverinfo: "skip" });
  const by = varying.length ? ` · labels: ${varying.map(shortAxis).join(", ")}` : "";
  draw("chart-pareto", traces, layout(`Best val acc vs wire bytes per step${by}`, { xTitle: "wire bytes per step (log)", yTitle: "best val acc %",
    extra: { xaxis: { type: "log", title: { text: "wire bytes per step" }, gridcolor: "#eef1f4", range: valid.length ? [xlo - xpad, xhi + xpad] : undefined },
      yaxis: { title: { text: "best val acc %" }, gridcolor: "#eef1f4", range: valid.length ? [ylo - ypad, yhi + ypad] : undefined }, hovermode: "closest", showlegend: false } }));
}

// One overlay chart; its series are fetched per run when first shown and kept.
const curveCache = new Map(); // "run:name" -> series | null
const curveSelect = document.getElementById("curve-select");
const CURVE_TITLES = { "val/acc": ["Validation accuracy", "%"], "train/loss": ["Training loss", "loss"], "val/loss": ["Validation loss", "loss"],
  "train/acc": ["Training accuracy", "%"], "val_dense/acc": ["Validation accuracy, dense eval", "%"], "time/batch_s": ["Time per batch", "s"], "wire/ratio": ["Compression ratio", "×"] };

// Runs' series arrive one request each; the chart is redrawn as they come (at most every 250 ms).
async function drawCurves() {
  const name = curveSelect.value;
  const [, y] = CURVE_TITLES[name] || [name, ""];
  // Runs that differ only in their seed are drawn as one mean curve with a ±std band.
  const { config, seeds, groups } = groupRuns(table.runs.map((r) => ({ ...r, values: r.differences || {} })), table.varying_fields || []);
  const render = () => {
    const traces = [];
    if (seeds.length) {
      groups.forEach((g, i) => traces.push(...meanTraces(g.runs.map((r) => curveCache.get(`${r.run_id}:${name}`)),
        config.length ? groupLabel(g.values, config) : "all runs", COLORS[i % COLORS.length], g.runs.map((r) => r.run_id))));
    } else table.runs.forEach((r, i) => {
      const s = curveCache.get(`${r.run_id}:${name}`);
      if (s) traces.push(line(label(r), s, { color: COLORS[i % COLORS.length], width: r.run_id === table.baseline_run_id ? 2.4 : 1.4 }));
    });
    const lay = layout("", { yTitle: y, extra: { hovermode: "closest",
      legend: { orientation: "v", x: 1.02, xanchor: "left", y: 1, font: { size: 10 } }, margin: { l: 60, r: 10, t: 44, b: 46 } } });
    if (name === "time/batch_s") clipSpikes(traces, lay);
    draw("chart-curves", traces, lay);
  };
  let pending = null;
  const soon = () => (pending ??= setTimeout(() => { pending = null; render(); }, 250));
  await Promise.all(table.runs.map(async (r) => {
    const key = `${r.run_id}:${name}`;
    if (curveCache.has(key)) return;
    const m = await api(`/runs/${r.run_id}/metrics`, { query: { names: name, max_points: MAX_POINTS } }).catch(() => null);
    curveCache.set(key, m ? m.series[name] || null : null);
    soon();
  }));
  clearTimeout(pending);
  pending = null;
  render();
}

async function load() {
  plotlyReady().catch(() => {});
  try {
    table = await api("/compare", { query: { run_ids: RUN_IDS.join(","), baseline: baselineSelect.value || head.dataset.baseline } });
  } catch (err) {
    if (!retryable(err)) showBanner(`Could not compare runs ${RUN_IDS.join(", ")}: ${typeof err.detail === "string" ? err.detail : err.message}`);
    else setTimeout(load, 3000);
    return;
  }
  if (baselineSelect.options.length === 1) {
    for (const r of table.runs) baselineSelect.append(el("option", { value: r.run_id, text: `#${r.run_id} ${r.name}` }));
    if (head.dataset.baseline) baselineSelect.value = head.dataset.baseline;
  }
  renderTable();
  await plotlyReady();
  drawPareto();
  // Interactive once the table and the scatter are up; the overlaid curves stream in after.
  markReady();
  await drawCurves();
  window.__slimpipeCurvesReady = performance.now();
}

curveSelect.addEventListener("change", () => drawCurves());
baselineSelect.addEventListener("change", () => {
  const q = new URLSearchParams(location.search);
  baselineSelect.value ? q.set("baseline", baselineSelect.value) : q.delete("baseline");
  history.replaceState(null, "", `?${q}`);
  head.dataset.baseline = baselineSelect.value;
  load();
});
document.getElementById("export-csv").addEventListener("click", async () => {
  const q = new URLSearchParams({ run_ids: RUN_IDS.join(",") });
  if (baselineSelect.value) q.set("baseline", baselineSelect.value);
  try {
    await download(`/compare.csv?${q}`, "compare.csv");
  } catch (err) {
    showBanner(`Export failed: ${err.message}`);
  }
});

load();
