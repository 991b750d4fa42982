// Sweep view over any number of axes: the first axis on x, one line per value of the second, one facet per
// value of the rest (and a parallel-coordinates view of them all); seeds grouped as mean ± std.
import { api, authHeaders, markReady, retryable, showBanner } from "./api.js";
import { COLORS, draw, layout, plotlyReady, wantsLog } from "./charts.js";
import { badge, el, fmtBytes, fmtDelta, fmtPct, fmtRatio, fmtValue } from "./format.js";
import { axisValues, groupLabel, groupRuns, isNumericAxis, key, meanStd, meanTraces, shortAxis } from "./study.js";

const EXP_ID = Number(document.getElementById("experiment-head").dataset.experimentId);
const MAX_FACETS = 12;
const MAX_POINTS = 400;
let study = null;

const fmtPctStd = ({ mean, std }) => (std == null ? fmtPct(mean) : `${fmtPct(mean)} ± ${std.toFixed(2)}`);

async function load() {
  plotlyReady().catch(() => {});
  let exp, table;
  try {
    exp = await api(`/experiments/${EXP_ID}`);
    table = exp.run_ids.length ? await api("/compare", { query: { run_ids: exp.run_ids.join(",") } }) : { runs: [] };
  } catch (err) {
    if (err.status === 404) showBanner(`Experiment ${EXP_ID} not found.`);
    else if (!retryable(err)) showBanner(`Could not load experiment ${EXP_ID}: ${err.message}`);
    else setTimeout(load, 3000);
    return;
  }
  document.getElementById("experiment-name").textContent = exp.name;
  document.title = `${exp.name} · slimpipe`;
  const axes = Object.keys(exp.sweep || {});
  document.getElementById("experiment-sub").textContent =
    `#${exp.id} · ${exp.run_ids.length} run${exp.run_ids.length === 1 ? "" : "s"}` + (axes.length ? ` · sweep over ${axes.join(" × ")}` : "");
  document.getElementById("experiment-compare").href = `/compare?run_ids=${exp.run_ids.join(",")}`;
  document.getElementById("experiment-runs").href = `/?experiment_id=${exp.id}`;
  fetch("/ui/spec/yaml", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify({ spec: { ...exp.spec, sweep: exp.sweep || undefined } }) })
    .then((r) => r.text())
    .then((t) => (document.getElementById("experiment-spec").textContent = t));

  // Runs carry their own sweep values; the compare table carries the results.
  const runs = await Promise.all(exp.run_ids.map((id) => api(`/runs/${id}`).catch(() => null)));
  const byId = new Map(runs.filter(Boolean).map((r) => [r.id, r]));
  const rows = table.runs.map((t) => ({ ...t, values: (byId.get(t.run_id) || {}).sweep_values || {} }));
  study = groupRuns(rows, axes, exp.sweep || {});
  renderTable(table);

  // Parallel coordinates (three axes or more) need the full plotly.js bundle.
  await plotlyReady({ full: study.config.length >= 3 });
  drawSweep();
  markReady();
  await drawCurves();
  if (rows.some((r) => r.status === "queued" || r.status === "running")) setTimeout(load, 3000);
}

function renderTable(table) {
  const { config, seeds, groups } = study;
  const cols = config.length ? config : ["run"];
  const figure = (g, name) => meanStd(g.runs.map((r) => r[name]));
  document.getElementById("sweep-table").replaceChildren(
    el("thead", {}, el("tr", {}, cols.map((a) => el("th", { title: a, text: a === "run" ? "run" : shortAxis(a) })),
      seeds.length ? el("th", { class: "num", title: `runs averaged over ${seeds.join(", ")}`, text: "Seeds" }) : null,
      ["Best val acc", "Final val acc", "Δ vs baseline", "Wire/step", "Ratio"].map((h) => el("th", { class: "num", text: h })),
      el("th", { text: "Runs" }))),
    el("tbody", {}, groups.map((g) => el("tr", { "data-group": g.key, "data-run-ids": g.runs.map((r) => r.run_id).join(",") },
      config.length ? config.map((a) => el("td", { class: "mono", "data-axis": a, text: fmtValue(g.values[a]) }))
                    : [el("td", {}, el("a", { href: `/runs/${g.runs[0].run_id}`, text: g.runs[0].name }))],
      seeds.length ? el("td", { class: "num", title: g.runs.map((r) => seeds.map((s) => `${s}=${fmtValue(r.values[s])}`).join(" ")).join("\n"), text: String(g.runs.length) }) : null,
      el("td", { class: "num strong", "data-col": "best_val_acc" }, fmtPctStd(figure(g, "best_val_acc"))),
      el("td", { class: "num", "data-col": "final_val_acc" }, fmtPctStd(figure(g, "final_val_acc"))),
      deltaCell(figure(g, "delta_val_acc").mean),
      el("td", { class: "num", "data-col": "wire_bytes_per_step" }, fmtBytes(figure(g, "wire_bytes_per_step").mean)),
      el("td", { class: "num", "data-col": "compression_ratio" }, fmtRatio(figure(g, "compression_ratio").mean)),
      el("td", {}, g.runs.map((r) => el("a", { class: "run-chip", href: `/runs/${r.run_id}`, title: r.name }, `#${r.run_id} `, badge(r.status)))),
    ))),
  );
  const notes = [table.baseline_run_id ? `Baseline: run #${table.baseline_run_id} (every boundary uncompressed).` : "No uncompressed run in this experiment, so no Δ."];
  if (seeds.length) notes.push(`Rows group the runs that differ only in ${seeds.join(", ")}: mean ± sample standard deviation over the seeds.`);
  document.getElementById("sweep-note").textContent = notes.join(" ");
}

function deltaCell(v) {
  return el("td", { class: `num ${v < 0 ? "neg" : v > 0 ? "pos" : ""}`, "data-col": "delta_val_acc" }, fmtDelta(v));
}

// One trace per value of the second axis; x is the first axis (categories unless every value is a number).
function sweepTraces(groups, xAxis, lineAxis) {
  const xs = xAxis ? axisValues(groups, xAxis, study.order[xAxis]) : [];
  const numeric = xAxis && isNumericAxis(xs);
  const lines = lineAxis ? axisValues(groups, lineAxis, study.order[lineAxis]) : [undefined];
  const traces = lines.map((lv, i) => {
    const members = groups.filter((g) => lineAxis === undefined || key(g.values[lineAxis]) === key(lv));
    const stats = members.map((g) => meanStd(g.runs.map((r) => r.best_val_acc)));
    const hasStd = stats.some((s) => s.std != null);
    return {
      type: "scatter", mode: "lines+markers",
      name: lineAxis ? `${shortAxis(lineAxis)}=${fmtValue(lv)}` : "best val acc",
      x: members.map((g) => (xAxis ? (numeric ? g.values[xAxis] : fmtValue(g.values[xAxis])) : "all runs")),
      y: stats.map((s) => s.mean),
      error_y: hasStd ? { type: "data", array: stats.map((s) => s.std ?? 0), visible: true, thickness: 1.2, width: 4 } : undefined,
      customdata: stats.map((s, j) => [s.n, members[j].runs.map((r) => `#${r.run_id}`).join(" "), s.std == null ? "" : ` ± ${s.std.toFixed(2)}`]),
      hovertemplate: "%{x}: %{y:.2f}%%{customdata[2]} (n=%{customdata[0]}: %{customdata[1]})<extra>%{fullData.name}</extra>",
      line: { color: COLORS[i % COLORS.length] }, marker: { size: 8 },
    };
  });
  const xaxis = { title: { text: xAxis ? shortAxis(xAxis) : "" }, gridcolor: "#eef1f4" };
  if (!numeric) Object.assign(xaxis, { type: "category", categoryorder: "array", categoryarray: xAxis ? xs.map(fmtValue) : ["all runs"] });
  else if (wantsLog([{ y: xs }])) xaxis.type = "log";
  return { traces, xaxis };
}

function drawSweep() {
  const { config, seeds, groups } = study;
  const [xAxis, lineAxis, ...facetAxes] = config;
  const box = document.getElementById("sweep-charts");
  for (const extra of box.querySelectorAll("[data-facet], #chart-parcoords")) extra.remove();
  // Facets: one chart per combination of the axes beyond the second.
  const facets = new Map();
  for (const g of groups) {
    const k = key(facetAxes.map((a) => g.values[a]));
    if (!facets.has(k)) facets.set(k, []);
    facets.get(k).push(g);
  }
  const seedNote = seeds.length ? ` · mean ± std over ${seeds.map(shortAxis).join(", ")}` : "";
  const facetList = [...facets.values()].slice(0, MAX_FACETS);
  facetList.forEach((members, i) => {
    const div = i === 0 ? document.getElementById("chart-sweep") : el("div", { class: "chart card", "data-facet": i });
    if (i > 0) box.insertBefore(div, box.children[i]);
    const { traces, xaxis } = sweepTraces(members, xAxis, lineAxis);
    const where = facetAxes.length ? ` · ${groupLabel(members[0].values, facetAxes)}` : "";
    const title = `Best val acc vs ${xAxis ? shortAxis(xAxis) : "runs"}${where}${seedNote}`;
    draw(div, traces, layout(title, { yTitle: "best val acc %", extra: { xaxis, hovermode: "closest", margin: { l: 60, r: 20, t: 44, b: 58 } } }));
  });
  if (facets.size > MAX_FACETS) document.getElementById("sweep-note").textContent += ` Showing ${MAX_FACETS} of ${facets.size} facets; the parallel-coordinates chart has them all.`;
  if (config.length >= 3) drawParcoords(box, config, groups);
}

function drawParcoords(box, config, groups) {
  const div = el("div", { class: "chart card wide", id: "chart-parcoords" });
  box.append(div);
  const acc = groups.map((g) => meanStd(g.runs.map((r) => r.best_val_acc)).mean);
  const dimensions = config.map((a) => {
    const values = axisValues(groups, a, study.order[a]);
    const index = new Map(values.map((v, i) => [key(v), i]));
    return { label: shortAxis(a), values: groups.map((g) => index.get(key(g.values[a]))), tickvals: values.map((_, i) => i), ticktext: values.map(fmtValue) };
  });
  dimensions.push({ label: "best val acc %", values: acc });
  window.Plotly.react(div, [{ type: "parcoords", dimensions, line: { color: acc, colorscale: "Viridis", showscale: true } }],
    { title: { text: "Every axis at once (one line per configuration)", font: { size: 14 }, x: 0.02, y: 0.97 }, margin: { l: 60, r: 40, t: 90, b: 30 } });
}

// The chosen series per configuration: the mean over its seeds, with a ±std band when there are several.
const curveCache = new Map();
async function drawCurves() {
  const name = document.getElementById("sweep-curve-select").value;
  const { config, groups } = study;
  await Promise.all(groups.flatMap((g) => g.runs).map(async (r) => {
    const k = `${r.run_id}:${name}`;
    if (curveCache.has(k) && r.status !== "running") return;
    const m = await api(`/runs/${r.run_id}/metrics`, { query: { names: name, max_points: MAX_POINTS } }).catch(() => null);
    curveCache.set(k, m ? m.series[name] || null : null);
  }));
  const traces = [];
  groups.forEach((g, i) => traces.push(...meanTraces(g.runs.map((r) => curveCache.get(`${r.run_id}:${name}`)),
    config.length ? groupLabel(g.values, config) : g.runs[0].name, COLORS[i % COLORS.length], g.runs.map((r) => r.run_id))));
  // Many configurations: the chart takes the full row and the legend goes underneath.
  const many = groups.length > 4;
  document.getElementById("chart-sweep-curves").parentElement.classList.toggle("wide", many);
  const legend = many ? { orientation: "h", x: 0, y: -0.2, yanchor: "top", font: { size: 10 } } : { orientation: "v", x: 1.02, xanchor: "left", y: 1, font: { size: 10 } };
  draw("chart-sweep-curves", traces, layout("", { yTitle: name, extra: { hovermode: "closest", legend,
    margin: { l: 60, r: 10, t: 30, b: many ? 46 + 18 * Math.ceil(groups.length / 3) : 46 } } }));
  window.__slimpipeCurvesReady = performance.now();
}

document.getElementById("sweep-curve-select").addEventListener("change", () => drawCurves());
load();
