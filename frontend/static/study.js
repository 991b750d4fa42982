// Studies: runs grouped by their sweep values over any number of axes, seeds folded into mean ± std.
import { line } from "./charts.js";
import { fmtValue } from "./format.js";

// The seed axis is averaged over rather than drawn: repeated runs of one configuration.
export const SEED_AXES = ["train.seed"];
export const isSeedAxis = (axis) => SEED_AXES.includes(axis);
// A spec path without its compression prefix: "backward.topk", "preset", "b3.forward.bits".
export const shortAxis = (axis) => axis.replace(/^compression\.(default\.)?/, "").replace(/^boundaries\./, "b");

// Mean and sample standard deviation (n − 1) of the finite values; std is null below two values.
export function meanStd(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x));
  if (!v.length) return { mean: null, std: null, n: 0 };
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : null;
  return { mean, std, n: v.length };
}

// An axis is drawn as categories unless every value is a number (null = "none", e.g. dense, is a category).
export const isNumericAxis = (values) => values.length > 0 && values.every((v) => typeof v === "number");

// Sort order of sweep values: numbers ascending, then the rest by their text, "none" first.
export function compareValues(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return fmtValue(a).localeCompare(fmtValue(b));
}

export const key = (values) => JSON.stringify(values);

// How an axis's values sort: in the order the sweep lists them where they are not all numbers (presets:
// balanced, aggressive, extreme), else by compareValues (numbers ascending, for a line over them).
export function sweepOrder(listed) {
  if (!Array.isArray(listed) || isNumericAxis(listed)) return compareValues;
  const rank = new Map(listed.map((v, i) => [key(v), i]));
  return (a, b) => (rank.has(key(a)) && rank.has(key(b)) ? rank.get(key(a)) - rank.get(key(b)) : compareValues(a, b));
}

// rows: [{run_id, values: {axis: value}, ...figures}]; axes: the sweep's axes in order; sweep: {axis: [values]}
// where known. Returns the configuration axes (seeds removed), the seed axes present, one group per
// configuration, and each axis's sort order.
export function groupRuns(rows, axes, sweep = {}) {
  const seeds = axes.filter(isSeedAxis);
  const config = axes.filter((a) => !isSeedAxis(a));
  const groups = new Map();
  for (const row of rows) {
    const values = config.map((a) => row.values[a] ?? null);
    const k = key(values);
    if (!groups.has(k)) groups.set(k, { key: k, values: Object.fromEntries(config.map((a, i) => [a, values[i]])), runs: [] });
    groups.get(k).runs.push(row);
  }
  const order = Object.fromEntries(config.map((a) => [a, sweepOrder(sweep[a])]));
  const sorted = [...groups.values()].sort((g, h) => {
    for (const a of config) {
      const c = order[a](g.values[a], h.values[a]);
      if (c) return c;
    }
    return 0;
  });
  return { config, seeds, groups: sorted, order };
}

// The distinct values an axis takes over the groups, sorted by `compare` (groupRuns' order for the axis).
export const axisValues = (groups, axis, compare = compareValues) => {
  const seen = new Map();
  for (const g of groups) seen.set(key(g.values[axis]), g.values[axis]);
  return [...seen.values()].sort(compare);
};

// A group's label from the chosen axes, e.g. "backward.topk=0.1, bits=8".
export const groupLabel = (values, axes) => axes.map((a) => `${shortAxis(a)}=${fmtValue(values[a])}`).join(", ");

// Mean ± std of several runs' series at the steps every run has (validation passes share their steps).
export function meanSeries(seriesList) {
  const present = seriesList.filter(Boolean);
  if (!present.length) return null;
  const byStep = present.map((s) => new Map(s.step.map((st, i) => [st, s.value[i]])));
  const steps = present[0].step.filter((st) => byStep.every((m) => m.has(st)));
  const stats = steps.map((st) => meanStd(byStep.map((m) => m.get(st))));
  return { step: steps, value: stats.map((s) => s.mean), std: stats.map((s) => s.std), n: present.length };
}

// One configuration's curve: the mean of its runs' series (`line`), under a ±std band where there are several.
export function meanTraces(seriesList, label, color, runIds) {
  const s = meanSeries(seriesList);
  if (!s || !s.step.length) return [];
  const traces = [];
  if (s.n > 1) traces.push({ type: "scatter", mode: "lines", x: [...s.step, ...[...s.step].reverse()], hoverinfo: "skip", showlegend: false,
    y: [...s.value.map((v, j) => v + (s.std[j] ?? 0)), ...s.value.map((v, j) => v - (s.std[j] ?? 0)).reverse()],
    fill: "toself", fillcolor: `${color}22`, line: { width: 0 }, name: `${label} ± std` });
  traces.push({ ...line(s.n > 1 ? `${label} (mean of ${s.n})` : label, s, { color, width: 1.8 }), meta: { runs: runIds } });
  return traces;
}
