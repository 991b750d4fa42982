// New run: a form over every spec field, a YAML/JSON view kept in sync, server-side validation, sweeps, clone.
import { api, ApiError, authHeaders, retryable, showBanner, writeKey } from "./api.js";
import { debounce, el } from "./format.js";

const form = document.getElementById("spec-form");
const text = document.getElementById("spec-text");
const stageList = document.getElementById("stage-list");
const overrides = document.getElementById("overrides");
const sweepRows = document.getElementById("sweep-rows");
let format = "yaml";
let zoo = { models: {} };
let syncing = false; // true while the form is being filled from the text, so it does not echo back

// ---------------------------------------------------------------- paths
function getPath(obj, path) {
  return path.split(".").reduce((node, key) => (node == null ? undefined : node[key]), obj);
}
function setPath(obj, path, value) {
  const parts = path.split(".");
  let node = obj;
  for (const key of parts.slice(0, -1)) node = node[key] ??= {};
  node[parts[parts.length - 1]] = value;
}

// ---------------------------------------------------------------- one input <-> one value
function readInput(input) {
  const kind = input.dataset.kind;
  const raw = input.type === "checkbox" ? input.checked : input.value.trim();
  if (kind === "bool") return raw;
  if (raw === "") return input.dataset.nullable ? null : undefined;
  if (kind === "int") return Number.isInteger(Number(raw)) ? Number(raw) : raw;
  if (kind === "float") return Number.isFinite(Number(raw)) ? Number(raw) : raw;
  if (kind === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw; // the server names the field and says why
    }
  }
  return raw;
}
function writeInput(input, value) {
  const kind = input.dataset.kind;
  if (kind === "bool") input.checked = !!value;
  else if (value === null || value === undefined) input.value = "";
  else if (kind === "list") input.value = value.join(", ");
  else if (kind === "json") input.value = Object.keys(value).length ? JSON.stringify(value) : "";
  else {
    // A choice the list does not know (an unknown model) is kept, so the API can say what is wrong with it.
    if (input.tagName === "SELECT" && value !== "" && ![...input.options].some((o) => o.value === String(value)))
      input.append(el("option", { value: String(value), text: `${value} (unknown)`, "data-unknown": "1" }));
    input.value = String(value);
  }
}

// The text view describes changes to the defaults: what it leaves out keeps its default value.
const DEFAULTS = JSON.parse(document.getElementById("initial-spec").textContent);
function overDefaults(base, edit) {
  if (!isPlainObject(base) || !isPlainObject(edit)) return edit === undefined ? base : edit;
  const out = { ...base };
  for (const [k, v] of Object.entries(edit)) out[k] = overDefaults(base[k], v);
  return out;
}
const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// ---------------------------------------------------------------- stages
function stageMode() {
  return form.querySelector("input[name=stage-mode]:checked").value;
}
function setStageMode(mode) {
  form.querySelector(`input[name=stage-mode][value=${mode}]`).checked = true;
  stageList.hidden = mode !== "stages";
  document.getElementById("stage-add").hidden = mode !== "stages";
}
function renumberStages() {
  [...stageList.children].forEach((row, i) => (row.querySelector(".stage-index").textContent = `stage ${i}`));
}
function addStage(paths = []) {
  const row = document.getElementById("stage-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".stage-paths").value = paths.join(", ");
  row.querySelector(".stage-remove").onclick = () => {
    row.remove();
    renumberStages();
    changed();
  };
  row.querySelector(".stage-up").onclick = () => {
    if (row.previousElementSibling) stageList.insertBefore(row, row.previousElementSibling);
    renumberStages();
    changed();
  };
  stageList.append(row);
  renumberStages();
  return row;
}
function readStages() {
  return [...stageList.querySelectorAll(".stage-paths")].map((i) => i.value.split(",").map((s) => s.trim()).filter(Boolean));
}
function loadPreset() {
  const model = zoo.models[form.querySelector('[data-path="model.name"]').value];
  const note = document.getElementById("stage-preset-note");
  if (!model || !model.default_stages) {
    note.textContent = "this model has no preset partition";
    return;
  }
  stageList.replaceChildren();
  model.default_stages.forEach((s) => addStage(s));
  setStageMode("stages");
  note.textContent = `${model.default_stages.length} stages from the zoo`;
  changed();
}

// ---------------------------------------------------------------- per-boundary overrides
function addOverride(index = 0, value = {}) {
  const row = document.getElementById("override-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".override-index").value = index;
  for (const dir of ["forward", "backward"]) {
    const box = row.querySelector(`.override-dir[data-dir=${dir}]`);
    const spec = value[dir] || (Object.keys(value).length ? null : {});
    box.checked = !!spec;
    const defaults = getPath(JSON.parse(document.getElementById("initial-spec").textContent), `compression.default.${dir}`);
    for (const input of row.querySelectorAll(`[data-rel^="${dir}."]`)) {
      const key = input.dataset.rel.slice(dir.length + 1);
      writeInput(input, spec && key in spec ? spec[key] : defaults[key]);
    }
    const toggle = () => (row.querySelector(`[data-codec="${dir}."]`).disabled = !box.checked);
    box.addEventListener("change", () => {
      toggle();
      changed();
    });
    toggle();
  }
  row.querySelector(".override-remove").onclick = () => {
    row.remove();
    changed();
  };
  overrides.append(row);
  return row;
}
function readOverrides() {
  const out = {};
  for (const row of overrides.querySelectorAll(".override")) {
    const entry = {};
    for (const dir of ["forward", "backward"]) {
      if (!row.querySelector(`.override-dir[data-dir=${dir}]`).checked) continue;
      const codec = {};
      for (const input of row.querySelectorAll(`[data-rel^="${dir}."]`)) {
        const v = readInput(input);
        if (v !== undefined) codec[input.dataset.rel.slice(dir.length + 1)] = v;
      }
      entry[dir] = codec;
    }
    out[row.querySelector(".override-index").value] = entry;
  }
  return out;
}

// ---------------------------------------------------------------- sweep
function parseValue(token) {
  const t = token.trim();
  if (/^(null|none)$/i.test(t)) return null;
  if (/^(true|false)$/i.test(t)) return t.toLowerCase() === "true";
  if (t !== "" && Number.isFinite(Number(t))) return Number(t);
  return t.replace(/^["']|["']$/g, "");
}
function parseValues(raw) {
  const t = raw.trim();
  if (!t) return [];
  if (t.startsWith("[")) {
    try {
      return JSON.parse(t);
    } catch {}
  }
  return t.split(",").map(parseValue);
}
function addSweep(path = "", values = []) {
  const row = document.getElementById("sweep-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".sweep-path").value = path;
  row.querySelector(".sweep-values").value = values.map((v) => (v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
  row.querySelector(".sweep-remove").onclick = () => {
    row.remove();
    changed();
  };
  sweepRows.append(row);
  return row;
}
// A sweep pasted with the spec (`sweep:` as in a .sweep.yaml file) fills the sweep rows.
function fillSweep(sweep) {
  sweepRows.replaceChildren();
  for (const [path, values] of Object.entries(sweep)) addSweep(path, Array.isArray(values) ? values : [values]);
  updateSweepCount();
}
function readSweep() {
  const sweep = {};
  for (const row of sweepRows.querySelectorAll(".sweep-row")) {
    const path = row.querySelector(".sweep-path").value.trim();
    if (path) sweep[path] = parseValues(row.querySelector(".sweep-values").value);
  }
  return Object.keys(sweep).length ? sweep : null;
}

// ---------------------------------------------------------------- the whole form
const pathInputs = () => [...form.querySelectorAll("[data-path]")];

export function readForm() {
  const spec = {};
  for (const input of pathInputs()) {
    if (input.dataset.path === "pipeline.balance") continue;
    const v = readInput(input);
    if (v !== undefined) setPath(spec, input.dataset.path, v);
  }
  const mode = stageMode();
  spec.pipeline.stages = mode === "stages" ? readStages() : null;
  spec.pipeline.balance = mode === "balance" ? readInput(document.getElementById("f-pipeline-balance")) : null;
  spec.compression.boundaries = readOverrides();
  return spec;
}

// Choosing a preset fills the default codecs with its values; fields changed afterwards replace the preset's.
const PRESETS = JSON.parse(document.getElementById("compression-presets").textContent);
function applyPreset() {
  const values = PRESETS[document.getElementById("f-compression-preset").value];
  if (!values) return;
  for (const input of document.querySelectorAll("#default-codecs [data-path]")) {
    writeInput(input, getPath({ compression: { default: values } }, input.dataset.path));
  }
}

export function fillForm(spec) {
  syncing = true;
  for (const input of pathInputs()) writeInput(input, getPath(spec, input.dataset.path));
  const stages = getPath(spec, "pipeline.stages");
  const balance = getPath(spec, "pipeline.balance");
  stageList.replaceChildren();
  (stages || []).forEach((s) => addStage(s));
  setStageMode(stages ? "stages" : balance ? "balance" : "default");
  overrides.querySelectorAll(".override").forEach((o) => o.remove());
  for (const [index, value] of Object.entries(getPath(spec, "compression.boundaries") || {})) addOverride(index, value || {});
  showModel();
  syncing = false;
}

// ---------------------------------------------------------------- text view
async function renderText(spec) {
  if (document.activeElement === text) return;
  if (format === "json") {
    text.value = JSON.stringify(spec, null, 2);
    return;
  }
  const response = await fetch("/ui/spec/yaml", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify({ spec }) });
  if (response.ok && document.activeElement !== text) text.value = await response.text();
}
async function parseText() {
  const status = document.getElementById("text-status");
  let spec;
  try {
    if (format === "json") spec = JSON.parse(text.value);
    else {
      const response = await fetch("/ui/spec/parse", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify({ text: text.value }) });
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail[0].message);
      spec = body.spec;
    }
  } catch (err) {
    status.textContent = `not parsed: ${err.message}`.slice(0, 160);
    status.className = "small error-text";
    setTextInvalid(true);
    return;
  }
  if (!isPlainObject(spec)) {
    status.textContent = "not parsed: the text must be a mapping of spec fields (model:, data:, …)";
    status.className = "small error-text";
    setTextInvalid(true);
    return;
  }
  setTextInvalid(false);
  status.textContent = "form updated; fields the text leaves out keep their defaults";
  status.className = "small muted";
  const { sweep, ...fields } = spec;
  fillForm(overDefaults(DEFAULTS, fields));
  if (sweep && typeof sweep === "object") fillSweep(sweep);
  validate();
}

// Text that does not parse stops the form: no "✓ valid" from an earlier check, no Submit.
let textInvalid = false;
function setTextInvalid(invalid) {
  textInvalid = invalid;
  document.getElementById("submit-button").disabled = invalid;
  if (invalid) {
    validateSeq++; // a check still in flight must not report "✓ valid" afterwards
    const v = document.getElementById("validate-status");
    v.textContent = "fix the text above first";
    v.className = "error-text small";
  }
}

// ---------------------------------------------------------------- validation
function clearErrors() {
  for (const box of form.querySelectorAll(".field-error")) {
    box.hidden = true;
    box.textContent = "";
  }
  for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
  const list = document.getElementById("form-errors");
  list.hidden = true;
  list.replaceChildren();
}

// The element an error's dotted field path belongs to: the field itself, else its nearest ancestor on the page.
function errorTarget(field) {
  const sweepRow = [...sweepRows.querySelectorAll(".sweep-row")].find((r) => {
    const p = r.querySelector(".sweep-path").value.trim();
    return field === `sweep.${p}`;
  });
  if (sweepRow) return sweepRow;
  let m = /^compression\.boundaries\.(\d+)(?:\.(.+))?$/.exec(field);
  if (m) {
    const row = [...overrides.querySelectorAll(".override")].find((r) => r.querySelector(".override-index").value === m[1]);
    if (row) return (m[2] && row.querySelector(`[data-field="${m[2]}"]`)) || row;
  }
  if (field.startsWith("sweep")) return document.querySelector('[data-section="sweep"]');
  const parts = field.split(".");
  while (parts.length) {
    const p = parts.join(".");
    const target = form.querySelector(`[data-field="${p}"]`) || form.querySelector(`[data-section="${p}"]`);
    if (target) return target;
    if (p === "pipeline.balance") return form.querySelector('[data-field="pipeline.stages"]');
    parts.pop();
  }
  return null;
}

// Whole-spec checks come back as field "spec" with the path at the start of the message
// ("compression.boundaries has index 7, but ..."): place them by that path.
function placeField(field, message) {
  if (field && field !== "spec") return field;
  const m = /^([a-z_]+(?:\.[a-z_0-9]+)+)/.exec(message);
  if (!m) return field;
  const index = /\bindex (\d+)/.exec(message);
  return m[1] === "compression.boundaries" && index ? `${m[1]}.${index[1]}` : m[1];
}

function showErrors(errors) {
  clearErrors();
  const list = document.getElementById("form-errors");
  for (const { field, message } of errors) {
    const target = errorTarget(placeField(field, message));
    if (target) {
      let box = target.querySelector(`:scope > .field-error[data-error-for="${field}"]`) || target.querySelector(":scope > .field-error:not([data-error-for])");
      if (!box) {
        box = el("div", { class: "field-error" });
        target.insertBefore(box, target.children[1] || null);
      }
      box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
      box.hidden = false;
      target.classList.add("invalid");
      target.querySelector("input,select")?.classList.add("invalid");
    }
    list.append(el("div", { class: "error-item" }, el("code", { text: field }), " ", message));
  }
  list.hidden = !errors.length;
  const first = form.querySelector(".field.invalid, .invalid");
  return first;
}

let validateSeq = 0;
async function validate() {
  if (textInvalid) return false;
  const seq = ++validateSeq;
  const status = document.getElementById("validate-status");
  status.textContent = "validating…";
  status.className = "muted small";
  try {
    const result = await api("/specs/validate", { method: "POST", body: { spec: readForm(), sweep: readSweep() } });
    if (seq !== validateSeq) return !textInvalid;
    clearErrors();
    status.textContent = `✓ valid · ${result.runs} run${result.runs === 1 ? "" : "s"}`;
    status.className = "ok-text small";
    document.getElementById("submit-button").textContent = result.runs > 1 ? `Submit ${result.runs} runs` : "Submit run";
    return true;
  } catch (err) {
    if (seq !== validateSeq) return false;
    if (err instanceof ApiError && err.status === 422 && Array.isArray(err.detail)) {
      showErrors(err.detail);
      status.textContent = `${err.detail.length} problem${err.detail.length === 1 ? "" : "s"}`;
      status.className = "error-text small";
    } else {
      status.textContent = err.status === 0 ? "API unreachable" : `validation failed: ${err.message}`;
      status.className = "error-text small";
    }
    return false;
  }
}
const validateSoon = debounce(validate, 500);

// ---------------------------------------------------------------- change plumbing
const renderSoon = debounce(() => renderText(readForm()), 120);
function changed() {
  if (syncing) return;
  renderSoon();
  validateSoon();
  updateSweepCount();
}
function updateSweepCount() {
  const sweep = readSweep();
  const n = sweep ? Object.values(sweep).reduce((acc, v) => acc * v.length, 1) : 1;
  document.getElementById("sweep-count").textContent = sweep ? `→ ${n} run${n === 1 ? "" : "s"}` : "";
}
function showModel() {
  const name = form.querySelector('[data-path="model.name"]').value;
  const info = zoo.models[name];
  document.getElementById("model-description").textContent = info ? info.description || "" : "";
}

form.addEventListener("input", (e) => {
  if (e.target === text) return;
  changed();
});
form.addEventListener("change", (e) => {
  if (e.target === text) return;
  if (e.target.id === "f-compression-preset") applyPreset();
  if (e.target.name === "stage-mode") {
    setStageMode(e.target.value);
    if (e.target.value === "stages" && !stageList.children.length) loadPreset();
  }
  if (e.target.dataset.path === "model.name") showModel();
  changed();
});
text.addEventListener("input", debounce(parseText, 400));
text.addEventListener("blur", () => renderText(readForm()));
for (const tab of document.querySelectorAll(".tab[data-format]")) {
  tab.addEventListener("click", () => {
    format = tab.dataset.format;
    document.querySelectorAll(".tab[data-format]").forEach((t) => t.classList.toggle("active", t === tab));
    text.blur();
    renderText(readForm());
  });
}
document.getElementById("stage-add").onclick = () => {
  addStage([]).querySelector("input").focus();
  changed();
};
document.getElementById("stage-preset").onclick = loadPreset;
document.getElementById("override-add").onclick = () => {
  const used = new Set([...overrides.querySelectorAll(".override-index")].map((i) => Number(i.value)));
  let index = 0;
  while (used.has(index)) index++;
  addOverride(index);
  changed();
};
document.getElementById("sweep-add").onclick = () => {
  addSweep().querySelector("input").focus();
  changed();
};
document.getElementById("validate-button").onclick = validate;

// The submission's write key stays while its body stays the same: when the answer to a submit is lost (the
// network dropped, the service restarted) and the user submits again, the service answers with the runs it
// queued the first time instead of queueing them twice. Any change to the form makes a new submission.
let submission = null; // {body, key}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = document.getElementById("submit-button");
  button.disabled = true;
  try {
    if (!(await validate())) {
      form.querySelector(".invalid")?.scrollIntoView({ block: "center" });
      return;
    }
    const spec = readForm();
    const queue = document.getElementById("f-queue").value || null;
    const body = { spec, sweep: readSweep(), queue, tags: spec.tags || [] };
    if (submission?.body !== JSON.stringify(body)) submission = { body: JSON.stringify(body), key: writeKey() };
    const result = await api("/experiments", { method: "POST", body, headers: { "Idempotency-Key": submission.key } });
    submission = null; // answered: the same form submitted again (back on this page) queues new runs
    location.href = result.run_ids.length === 1 ? `/runs/${result.run_ids[0]}` : `/experiments/${result.experiment_id}`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 422 && Array.isArray(err.detail)) showErrors(err.detail);
    else {
      const why = typeof err.detail === "string" ? err.detail : err.message;
      // Sent again unchanged, it goes under the same key: runs the lost answer told of are not queued twice.
      const again = retryable(err) ? ". Submit again once it answers: runs already queued are not queued twice" : "";
      showBanner(`Submit failed: ${why}${again}`);
    }
  } finally {
    button.disabled = textInvalid;
  }
});

// ---------------------------------------------------------------- start
async function start() {
  const initial = JSON.parse(document.getElementById("initial-spec").textContent);
  fillForm(initial);
  document.getElementById("field-paths").replaceChildren(
    ...pathInputs().map((i) => el("option", { value: i.dataset.path })),
  );
  api("/zoo")
    .then((z) => {
      zoo = z;
      showModel();
    })
    .catch(() => {});
  const clone = form.dataset.clone;
  if (clone) {
    try {
      const run = await api(`/runs/${clone}`);
      // The run's tags live on the run (the submission's tags plus the spec's); the clone keeps them all.
      fillForm({ ...run.spec, tags: [...new Set([...(run.spec.tags || []), ...(run.tags || [])])] });
      document.getElementById("form-title").textContent = "New run";
      document.getElementById("clone-note").replaceChildren("cloned from ", el("a", { href: `/runs/${run.id}` }, `#${run.id} ${run.name}`));
    } catch (err) {
      if (!retryable(err)) showBanner(`Could not load run ${clone} to clone: ${err.message}`);
    }
  }
  await renderText(readForm());
  validate();
  document.documentElement.dataset.ready = "1";
}
start();
