// Sweep view: one row per grid point, parameter(s) → val acc, as in the seed's pruning-ratio table.
import { api, authHeaders, markReady, showBanner } from "./api.js";
import { COLORS, draw, layout, plotlyReady } from "./charts.js";
import { badge, el, fmtDelta, fmtMB, fmtPct, fmtRatio, fmtValue } from "./format.js";

const EXP_ID = Number(document.getElementById("experiment-head").dataset.experimentId);

async function load() {
  plotlyReady().catch(() => {});
  let exp, table;
  try {
    exp = await api(`/experiments/${EXP_ID}`);
    table = exp.run_ids.length ? await api("/compare", { query: { run_ids: exp.run_ids.join(",") } }) : { runs: [] };
  } catch (err) {
    if (err.status === 404) showBanner(`Experiment ${EXP_ID} not found.`);
    else if (err.status !== 0) showBanner(`Could not load experiment ${EXP_ID}: ${err.message}`);
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
  const rows = table.runs.map((t) => ({ ...t, sweep_values: (byId.get(t.run_id) || {}).sweep_values || {} }));
  const axis = axes[0];
  if (axis) rows.sort((a, b) => compareValues(b.sweep_values[axis], a.sweep_values[axis]));

  const cols = axes.length ? axes : ["run"];
  document.getElementById("sweep-table").replaceChildren(
    el("thead", {}, el("tr", {}, cols.map((a) => el("th", { title: a, text: a.split(".").slice(-2).join(".") })),
      ["Best val acc", "Final val acc", "Δ vs baseline", "Wire MB/step", "Ratio"].map((h) => el("th", { class: "num", text: h })), el("th", { text: "Status" }))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-run-id": r.run_id },
      axes.length ? axes.map((a) => el("td", { class: "mono" }, el("a", { href: `/runs/${r.run_id}`, text: fmtValue(r.sweep_values[a]) })))
                  : [el("td", {}, el("a", { href: `/runs/${r.run_id}`, text: r.name }))],
      el("td", { class: "num strong", "data-col": "best_val_acc" }, fmtPct(r.best_val_acc)),
      el("td", { class: "num" }, fmtPct(r.final_val_acc)),
      el("td", { class: `num ${r.delta_val_acc < 0 ? "neg" : r.delta_val_acc > 0 ? "pos" : ""}` }, fmtDelta(r.delta_val_acc)),
      el("td", { class: "num" }, fmtMB(r.wire_bytes_per_step)),
      el("td", { class: "num" }, fmtRatio(r.compression_ratio)),
      el("td", {}, badge(r.status)),
    ))),
  );
  document.getElementById("sweep-note").textContent = table.baseline_run_id
    ? `Baseline: run #${table.baseline_run_id} (every boundary uncompressed).` : "No uncompressed run in this experiment, so no Δ.";

  await plotlyReady();
  if (axis) {
    const numeric = rows.every((r) => typeof r.sweep_values[axis] === "number");
    const pts = rows.filter((r) => r.best_val_acc != null);
    draw("chart-sweep", [
      { type: "scatter", mode: "lines+markers", name: "best val acc", x: pts.map((r) => numeric ? r.sweep_values[axis] : fmtValue(r.sweep_values[axis])), y: pts.map((r) => r.best_val_acc), line: { color: COLORS[0] }, marker: { size: 8 } },
      { type: "scatter", mode: "lines+markers", name: "final val acc", x: pts.map((r) => numeric ? r.sweep_values[axis] : fmtValue(r.sweep_values[axis])), y: pts.map((r) => r.final_val_acc), line: { color: COLORS[1], dash: "dot" }, marker: { size: 6 } },
    ], layout(`Val acc vs ${axis.split(".").slice(-2).join(".")}`, { xTitle: axis, yTitle: "%", extra: { hovermode: "closest" } }));
  } else {
    draw("chart-sweep", [], layout("Val acc vs sweep value"));
  }
  markReady();
  if (rows.some((r) => r.status === "queued" || r.status === "running")) setTimeout(load, 3000);
}

function compareValues(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1; // "none" (dense) first when sorted descending
  if (b === null || b === undefined) return -1;
  return a < b ? -1 : 1;
}

load();
