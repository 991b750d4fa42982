// Runs page: the table, filters kept in the URL, polling for live updates, bulk compare, actions.
import { api, markReady, retryable, retryRun, showBanner } from "./api.js";
import { badge, debounce, el, fmtAgo, fmtBytes, fmtPct, fmtRatio, fmtSecs, progressBar, DASH } from "./format.js";

const POLL_MS = 2000;
const PAGE = 50;
const body = document.getElementById("runs-body");
const filters = {
  status: document.getElementById("filter-status"),
  experiment_id: document.getElementById("filter-experiment"),
  tag: document.getElementById("filter-tag"),
  q: document.getElementById("filter-q"),
};
const SORT_DEFAULT = "-id";
let sort = SORT_DEFAULT;
const selected = new Set();
const experiments = new Map();
let offset = 0;
let timer = null;
let lastSnapshot = "";

function readUrl() {
  const q = new URLSearchParams(location.search);
  filters.status.value = q.get("status") || "";
  filters.tag.value = q.get("tag") || "";
  filters.q.value = q.get("q") || "";
  sort = q.get("sort") || SORT_DEFAULT;
  filters.experiment_id.dataset.want = q.get("experiment_id") || "";
  offset = Number(q.get("offset") || 0);
}
function writeUrl() {
  const q = new URLSearchParams();
  for (const [k, input] of Object.entries(filters)) if (input.value) q.set(k, input.value);
  if (sort !== SORT_DEFAULT) q.set("sort", sort);
  if (offset) q.set("offset", offset);
  history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
}

async function loadExperiments() {
  try {
    const { data } = await api("/experiments");
    const select = filters.experiment_id;
    for (const exp of data) {
      experiments.set(exp.id, exp);
      select.append(el("option", { value: exp.id, text: `#${exp.id} ${exp.name}` }));
    }
    if (select.dataset.want) select.value = select.dataset.want;
  } catch {}
}

function actionButtons(run) {
  const buttons = [];
  const act = async (label, fn) => {
    try {
      await fn();
    } catch (err) {
      showBanner(`${label} run ${run.id} failed: ${err.message}`);
    }
    refresh();
  };
  if (run.status === "queued" || run.status === "running")
    buttons.push(el("button", { class: "small", "data-action": "cancel", onclick: () => act("Cancel", () => api(`/runs/${run.id}/cancel`, { method: "POST" })) }, "Cancel"));
  if (run.status === "failed" || run.status === "cancelled")
    buttons.push(el("button", { class: "small", "data-action": "retry", onclick: () => act("Retry", () => retryRun(run.id)) }, "Retry"));
  buttons.push(el("a", { class: "button small", href: `/runs/new?clone=${run.id}`, title: "new run from this spec" }, "Clone"));
  buttons.push(
    el("button", {
      class: "small danger",
      "data-action": "delete",
      onclick: () => {
        if (confirm(`Delete run ${run.id} (${run.name})? Its metrics, logs and checkpoints go too.`)) act("Delete", () => api(`/runs/${run.id}`, { method: "DELETE" }));
      },
    }, "Delete"),
  );
  return el("div", { class: "row-actions" }, buttons);
}

function row(run) {
  const s = run.summary || {};
  const exp = experiments.get(run.experiment_id);
  const check = el("input", { type: "checkbox", class: "select-run", value: run.id, checked: selected.has(run.id) });
  check.addEventListener("change", () => {
    check.checked ? selected.add(run.id) : selected.delete(run.id);
    updateSelection();
  });
  const sweep = Object.entries(run.sweep_values || {}).map(([k, v]) => `${k.split(".").slice(-2).join(".")}=${JSON.stringify(v)}`).join(" ");
  return el(
    "tr",
    { "data-run-id": run.id, "data-status": run.status, class: selected.has(run.id) ? "selected" : "" },
    el("td", { class: "check" }, check),
    el("td", {}, el("a", { href: `/runs/${run.id}`, class: "run-link" }, run.name), el("div", { class: "small muted", text: `#${run.id}${sweep ? " · " + sweep : ""}` }),
      (run.tags || []).length ? el("div", {}, run.tags.map((t) => el("span", { class: "tag", text: t }))) : null),
    el("td", {}, run.experiment_id ? el("a", { href: `/experiments/${run.experiment_id}` }, exp ? exp.name : `#${run.experiment_id}`) : DASH),
    el("td", {}, badge(run.status), run.status === "failed" && run.error ? el("div", { class: "small error-text clip", title: run.error, text: run.error }) : null),
    el("td", { class: "progress-col" }, progressBar(run)),
    ["forward", "backward"].map((d) => el("td", { class: "small mono nowrap", "data-col": d, text: (run.compression || {})[d] || DASH })),
    el("td", { class: "num", "data-col": "best_val_acc" }, fmtPct(s.best_val_acc)),
    el("td", { class: "num", "data-col": "wire_bytes_per_step" }, fmtBytes(s.wire_bytes_per_step)),
    el("td", { class: "num" }, fmtRatio(s.compression_ratio)),
    el("td", { class: "num" }, fmtSecs(s.time_per_batch_s)),
    el("td", { class: "small muted", title: run.created_at }, fmtAgo(run.created_at)),
    el("td", { class: "actions-col" }, actionButtons(run)),
  );
}

function updateSelection() {
  document.getElementById("selected-count").textContent = `${selected.size} selected`;
  document.getElementById("compare-selected").disabled = selected.size < 1;
  const noTag = selected.size < 1 || !bulkTag.value.trim();
  document.getElementById("tag-selected").disabled = document.getElementById("untag-selected").disabled = noTag;
  for (const tr of body.querySelectorAll("tr[data-run-id]")) tr.classList.toggle("selected", selected.has(Number(tr.dataset.runId)));
}

function pager(count) {
  const box = document.getElementById("pager");
  box.replaceChildren();
  if (count <= PAGE) return;
  const go = (o) => () => {
    offset = Math.max(0, o);
    writeUrl();
    refresh();
  };
  box.append(
    el("button", { class: "small", disabled: offset === 0, onclick: go(offset - PAGE) }, "← newer"),
    el("span", { class: "small muted", text: ` ${offset + 1}–${Math.min(count, offset + PAGE)} of ${count} ` }),
    el("button", { class: "small", disabled: offset + PAGE >= count, onclick: go(offset + PAGE) }, "older →"),
  );
}

async function refresh() {
  clearTimeout(timer);
  try {
    const query = { limit: PAGE, offset, sort };
    for (const [k, input] of Object.entries(filters)) query[k] = input.value.trim();
    const { data, count } = await api("/runs", { query });
    // Rebuild the rows only when something changed, so hover, focus and clicks are not disturbed.
    const snapshot = JSON.stringify([data, count, offset]);
    if (snapshot === lastSnapshot && data.every((r) => r.status !== "running")) {
      markReady();
      timer = setTimeout(refresh, POLL_MS);
      return;
    }
    lastSnapshot = snapshot;
    body.replaceChildren(...(data.length ? data.map(row) : [el("tr", {}, el("td", { colspan: 13, class: "empty" }, "No runs match. ", el("a", { href: "/runs/new" }, "Start one.")))]));
    document.getElementById("runs-count").textContent = `${count} run${count === 1 ? "" : "s"}`;
    pager(count);
    updateSelection();
    markReady();
  } catch (err) {
    if (!retryable(err)) showBanner(`Could not list runs: ${err.message}`);
    // While the service restarts, the rows last listed stay (the banner says why they are not refreshed).
    if (!retryable(err) || !lastSnapshot)
      body.replaceChildren(el("tr", {}, el("td", { colspan: 13, class: "empty" }, "Runs unavailable — see the message above.")));
  }
  timer = setTimeout(refresh, POLL_MS);
}

const refilter = () => {
  offset = 0;
  writeUrl();
  refresh();
};
const typed = debounce(refilter, 250);
for (const input of Object.values(filters)) input.addEventListener(input.tagName === "SELECT" ? "change" : "input", input.tagName === "SELECT" ? refilter : typed);

// Sortable headers: a click sorts by that column, a second click reverses it; the arrow shows the order.
const sortHeads = document.querySelectorAll("#runs-table th[data-sort]");
function showSort() {
  for (const th of sortHeads) {
    const key = th.dataset.sort;
    const dir = sort === key ? "asc" : sort === `-${key}` ? "desc" : null;
    th.dataset.dir = dir || "";
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : dir === "desc" ? "descending" : "none");
  }
}
for (const th of sortHeads) {
  th.classList.add("sortable");
  th.title = th.title || "sort by this column";
  th.addEventListener("click", () => {
    const key = th.dataset.sort;
    const firstDesc = !["name", "status"].includes(key); // figures and dates: largest / newest first
    sort = sort === (firstDesc ? `-${key}` : key) ? (firstDesc ? key : `-${key}`) : firstDesc ? `-${key}` : key;
    showSort();
    refilter();
  });
}
document.getElementById("select-all").addEventListener("change", (e) => {
  for (const box of body.querySelectorAll("input.select-run")) {
    box.checked = e.target.checked;
    e.target.checked ? selected.add(Number(box.value)) : selected.delete(Number(box.value));
  }
  updateSelection();
});
// Tag or untag every selected run, each in one step on the server (add_tags / remove_tags), so tags given
// elsewhere meanwhile are kept.
const bulkTag = document.getElementById("bulk-tag");
bulkTag.addEventListener("input", updateSelection);
async function tagSelected(change) {
  const tag = bulkTag.value.trim();
  const failed = [];
  for (const id of [...selected].sort((a, b) => a - b)) {
    try {
      await api(`/runs/${id}`, { method: "PATCH", body: { [change]: [tag] } });
    } catch (err) {
      const detail = Array.isArray(err.detail) ? err.detail.map((d) => `${d.field}: ${d.message}`).join("; ") : err.message;
      failed.push(`run ${id}: ${detail}`);
    }
  }
  if (failed.length) showBanner(`Tagging failed for ${failed.join(", ")}`);
  refresh();
}
document.getElementById("tag-selected").addEventListener("click", () => tagSelected("add_tags"));
document.getElementById("untag-selected").addEventListener("click", () => tagSelected("remove_tags"));
document.getElementById("compare-selected").addEventListener("click", () => {
  location.href = `/compare?run_ids=${[...selected].sort((a, b) => a - b).join(",")}`;
});

readUrl();
showSort();
loadExperiments().then(refresh);
