// The what-if link planner: replay stored runs over a chosen bandwidth and latency (GET /runs/{id}/whatif).

import { api } from "/static/api.js";
import { DASH, el, fmtSecs } from "/static/format.js";

const panel = document.getElementById("planner");
const runIds = (panel.dataset.runIds || "").split(",").filter(Boolean);
const bandwidth = document.getElementById("planner-bandwidth");
const latency = document.getElementById("planner-latency");
const body = document.querySelector("#planner-table tbody");

async function row(runId) {
  const link = { bandwidth_mbps: bandwidth.value, latency_ms: latency.value || 0 };
  const cells = [el("td", {}, el("a", { href: `/runs/${runId}`, text: `#${runId}` }))];
  try {
    const plan = await api(`/runs/${runId}/whatif`, { query: link });
    cells.push(
      el("td", { class: "num", "data-col": "time", text: fmtSecs(plan.time_per_batch_s) }),
      el("td", { class: "num", text: fmtSecs(plan.one_device_time_per_batch_s) }),
      el("td", { class: "num", text: fmtSecs(plan.link_time_per_step_s) }),
      el("td", { class: "num", "data-col": "speedup", text: `${plan.speedup_vs_one_device.toFixed(2)}×` }),
    );
  } catch (err) {
    const detail = Array.isArray(err.detail) ? err.detail.map((d) => `${d.field}: ${d.message}`).join("; ") : err.message;
    cells.push(el("td", { colspan: 4, class: "muted small", text: detail || DASH }));
  }
  return el("tr", { dataset: { runId } }, cells);
}

async function replay() {
  if (!runIds.length || !(Number(bandwidth.value) > 0)) return;
  const rows = await Promise.all(runIds.map(row));
  body.replaceChildren(...rows);
  panel.dataset.ready = `${bandwidth.value}/${latency.value || 0}`;
}

document.getElementById("planner-form").addEventListener("submit", (event) => {
  event.preventDefault();
  replay();
});
for (const button of document.querySelectorAll("#planner-presets [data-mbps]")) {
  button.addEventListener("click", () => {
    bandwidth.value = button.dataset.mbps;
    replay();
  });
}
replay();
