// Formatting and a tiny DOM builder shared by the pages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const DASH = "—";
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function fmtNum(v, digits = 3) {
  if (!isNum(v)) return DASH;
  if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}
export function fmtPct(v) {
  return isNum(v) ? `${v.toFixed(2)}%` : DASH;
}
export function fmtDelta(v) {
  if (!isNum(v)) return DASH;
  return `${v > 0 ? "+" : v < 0 ? "−" : "±"}${Math.abs(v).toFixed(2)} pp`;
}
export function fmtBytes(v) {
  if (!isNum(v)) return DASH;
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}
export function fmtMB(v) {
  return isNum(v) ? (v / 1e6).toFixed(v >= 1e8 ? 0 : v >= 1e6 ? 2 : 3) : DASH;
}
export function fmtRatio(v) {
  return isNum(v) ? `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}×` : DASH;
}
export function fmtSecs(v) {
  if (!isNum(v)) return DASH;
  if (v < 1e-3) return `${(v * 1e6).toFixed(0)} µs`;
  if (v < 1) return `${(v * 1e3).toFixed(v < 0.01 ? 2 : 1)} ms`;
  if (v < 120) return `${v.toFixed(v < 10 ? 2 : 1)} s`;
  return fmtDuration(v);
}
export function fmtDuration(s) {
  if (!isNum(s)) return DASH;
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}
export function parseTime(iso) {
  if (!iso) return null;
  // The API writes UTC; a string without a zone is UTC too.
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
}
export function fmtAgo(iso) {
  const t = parseTime(iso);
  if (!t) return DASH;
  const s = (Date.now() - t.getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return t.toISOString().slice(0, 16).replace("T", " ");
}
export function fmtValue(v) {
  if (v === null || v === undefined) return "none";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function badge(status) {
  return el("span", { class: `badge ${status || ""}`, text: status || "" });
}

// Progress from the run row; the ETA is the engine's as of its latest step (median step and evaluation
// times, worker/train.py TimeLeft; summary.eta_at says when, on the worker's clock). No estimate, no ETA:
// a rate since the run started would count its start-up and every evaluation's pause.
export function progress(run) {
  const step = run.progress_step || 0;
  const total = run.progress_total || 0;
  const frac = total ? Math.min(1, step / total) : run.status === "succeeded" ? 1 : 0;
  const eta = run.status === "running" && run.summary && Number.isFinite(run.summary.eta_s) ? run.summary.eta_s : null;
  return { step, total, frac, eta };
}

export function progressBar(run) {
  const p = progress(run);
  const text = p.total ? `${p.step.toLocaleString()} / ${p.total.toLocaleString()}` : DASH;
  const eta = p.eta !== null ? ` · ETA ${fmtDuration(p.eta)}` : "";
  return el(
    "div",
    { class: "progress-cell" },
    el("div", { class: "progress" }, el("div", { class: `bar ${run.status}`, style: `width:${(p.frac * 100).toFixed(1)}%` })),
    el("span", { class: "small muted", text: text + eta }),
  );
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
