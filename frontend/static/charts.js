// Plotly helpers: one look for every chart, cheap live updates.
import { fmtSecs } from "./format.js";

const FONT = { family: "Inter, system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#1f2933" };
export const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"] };

export function layout(title, { xTitle = "step", yTitle = "", logY = false, extra = {} } = {}) {
  return {
    title: { text: title, font: { size: 14 }, x: 0.02, xanchor: "left" },
    font: FONT,
    margin: { l: 60, r: 20, t: 44, b: 46 },
    xaxis: { title: { text: xTitle }, gridcolor: "#eef1f4", zeroline: false },
    yaxis: { title: { text: yTitle }, gridcolor: "#eef1f4", zeroline: false, type: logY ? "log" : "linear" },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.01, yanchor: "bottom", font: { size: 11 }, bgcolor: "rgba(255,255,255,0)" },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    hovermode: "x unified",
    uirevision: "keep",
    ...extra,
  };
}

export function line(name, series, { color, dash, width = 1.6, mode = "lines" } = {}) {
  // Markers only where they help: sparse series such as validation passes, and a lone point, which a line
  // alone does not draw (a run evaluated once).
  if (mode === "lines+markers" && series && series.step.length > 120) mode = "lines";
  if (series && series.step.length === 1) mode = "lines+markers";
  return {
    type: "scatter",
    mode,
    name,
    x: series ? series.step : [],
    y: series ? series.value : [],
    line: { color, dash, width },
    marker: { size: 5 },
  };
}

// A log axis only where it helps: positive values spanning more than ~20x.
export function wantsLog(traces) {
  let lo = Infinity, hi = -Infinity;
  for (const t of traces) for (const v of t.y) {
    if (v === null || v === undefined) continue;
    if (v <= 0) return false;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return hi / lo > 20;
}

let revision = 0;
export function draw(div, traces, lay) {
  const node = typeof div === "string" ? document.getElementById(div) : div;
  if (!traces.length) {
    node.classList.add("no-data");
    node.replaceChildren();
    const msg = document.createElement("div");
    msg.className = "chart-empty";
    msg.append(Object.assign(document.createElement("strong"), { textContent: lay.title.text }));
    msg.append(Object.assign(document.createElement("span"), { textContent: "no data recorded" }));
    node.append(msg);
    return;
  }
  if (node.classList.contains("no-data")) {
    node.classList.remove("no-data");
    node.replaceChildren();
  }
  steadyRange(traces, lay);
  roomForLegend(traces, lay);
  // Live series grow in place, so tell Plotly the data changed even when the arrays are the same objects.
  lay.datarevision = ++revision;
  window.Plotly.react(node, traces, lay, CONFIG);
}

// The top legend shares its line with the title; once it wraps (per-boundary charts: 2 entries a boundary)
// it would cover the title, so it gets rows of its own between the title and the plot.
export function roomForLegend(traces, lay, perRow = 4) {
  const shown = traces.filter((t) => t.showlegend !== false).length;
  const legend = lay.legend;
  if (shown <= perRow || !legend || legend.orientation !== "h" || legend.yanchor !== "bottom" || legend.y < 1) return;
  const rows = Math.ceil(shown / perRow);
  lay.legend = { ...legend, x: 0, xanchor: "left" };
  lay.title = { ...lay.title, yref: "container", y: 1, yanchor: "top", pad: { t: 10 } };
  lay.margin = { ...lay.margin, t: 34 + 19 * rows };
}

// A series that is constant up to rounding (a ratio of 4.0000 ± 1e-6) would be autoscaled to its noise and
// look jagged; give such a y axis a range of ±5 % around the value instead.
export function steadyRange(traces, lay) {
  if (!lay.yaxis || lay.yaxis.type === "log" || lay.yaxis.range || lay.yaxis.type === "category") return;
  let lo = Infinity, hi = -Infinity;
  for (const t of traces) for (const v of t.y || []) {
    if (typeof v !== "number" || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return;
  const size = Math.max(Math.abs(lo), Math.abs(hi));
  if (hi - lo > 1e-3 * size) return;
  const pad = size ? 0.05 * size : 1;
  lay.yaxis = { ...lay.yaxis, range: [lo - pad, hi + pad], autorange: false };
}

export function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

// The first step of a session compiles kernels and warms caches: at 10x a steady step it squashed the time
// chart to a flat line along the bottom. Points over `factor` x their trace's median go off the top of the
// y axis, and a note says which steps and how long they took.
export function clipSpikes(traces, lay, factor = 4) {
  let top = 0;
  const spikes = [];
  for (const t of traces) {
    const mid = median(t.y || []);
    if (!(mid > 0) || t.y.length < 3) continue;
    t.y.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) return;
      if (v > factor * mid) spikes.push([t.x[i], v]);
      else top = Math.max(top, v);
    });
  }
  if (!spikes.length || !(top > 0)) return;
  spikes.sort((a, b) => b[1] - a[1]);
  const [step, worst] = spikes[0];
  const text = spikes.length === 1 ? `step ${step}: ${fmtSecs(worst)}, off the chart`
    : `${spikes.length} points off the chart, up to ${fmtSecs(worst)} (step ${step})`;
  lay.yaxis = { ...lay.yaxis, range: [0, 1.15 * top], autorange: false };
  lay.annotations = [...(lay.annotations || []), {
    text, xref: "paper", yref: "paper", x: 0.99, y: 0.99, xanchor: "right", yanchor: "top", showarrow: false,
    font: { size: 11, color: "#6b7280" },
  }];
}

// Points that are not dominated: no other run has higher acc with fewer bytes.
export function paretoFront(points) {
  const sorted = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x || b.y - a.y);
  const front = [];
  let best = -Infinity;
  for (const p of sorted) {
    if (p.y > best) {
      front.push(p);
      best = p.y;
    }
  }
  return front;
}

// plotly.js with the scatter traces only (1.2 MB; frontend/vendor/README.md) is downloaded early by a
// <link rel=preload> but executed only when a page asks, after it has sent its API requests, so compiling
// it overlaps the server's work instead of delaying it. `{ full: true }` loads the whole bundle (4.8 MB)
// instead, for the traces the basic one lacks (parallel coordinates); it replaces window.Plotly.
const loading = new Map();
function loadScript(src) {
  if (!loading.has(src)) {
    loading.set(src, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error("plotly.js did not load"));
      document.head.append(script);
    }));
  }
  return loading.get(src);
}
export function plotlyReady({ full = false } = {}) {
  // After the basic bundle, so the full one is the last to set window.Plotly.
  if (full) return plotlyReady().catch(() => {}).then(() => loadScript(document.body.dataset.plotlyFullSrc));
  if (window.Plotly) return Promise.resolve();
  return loadScript(document.body.dataset.plotlySrc);
}
