// The upres page: pick an image, queue a job, poll its progress, compare and download.
// Plain browser JavaScript: no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const KEY_STORAGE = "upres-api-key";

const state = {
  file: null,
  originalUrl: null,
  resultUrl: null,
  jobId: null,
  limits: {},
  defaults: {},
  models: [],
  authRequired: false,
  stopped: false,
};

// -- talking to the server ---------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      body = { detail: `${response.status} ${response.statusText}` };
    }
    const error = new Error(body.detail || body.error || `HTTP ${response.status}`);
    error.status = response.status;
    error.body = body;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw error;
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- start-up: limits, key, models -------------------------------------------------------

async function init() {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  bindControls();
  try {
    const health = await (await fetch("/healthz")).json();
    state.limits = health.limits || {};
    state.authRequired = Boolean(health.auth_required);
    $("key-field").hidden = !state.authRequired;
    showLimits();
    await loadModels();
  } catch (error) {
    showError(`The server did not answer: ${error.message}`);
  }
  updateDetailHint();
  updateReady();
}

async function loadModels() {
  if (state.authRequired && !$("api-key").value.trim()) return;
  const body = await (await api("/v1/models")).json();
  state.models = body.models.filter((m) => m.available);
  state.defaults = body.defaults || {};
  const select = $("model");
  select.querySelectorAll("optgroup").forEach((group) => group.remove());
  const groups = [
    ["faithful", "Faithful (no invented detail)"],
    ["restoration", "Real-world restoration"],
    ["other", "Other"],
  ];
  for (const [role, title] of groups) {
    const members = state.models.filter((m) => m.role === role);
    if (!members.length) continue;
    const group = document.createElement("optgroup");
    group.label = title;
    for (const model of members) {
      const option = new Option(`${model.name} (×${model.scale})`, model.name);
      option.title = model.summary;
      group.append(option);
    }
    select.append(group);
  }
  updateDetailHint();
}

function showLimits() {
  const { max_upload_bytes: bytes, max_input_size: side } = state.limits;
  const parts = ["PNG, JPEG, WebP, TIFF or BMP"];
  if (bytes) parts.push(`up to ${formatBytes(bytes)}`);
  if (side) parts.push(`larger than ${side} px is reduced first`);
  $("drop-limits").textContent = parts.join(" · ");
}

// -- controls ----------------------------------------------------------------------------

function bindControls() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseFile(event.dataTransfer.files[0]);
  });
  $("sharpen").addEventListener("input", () => {
    $("sharpen-value").value = Number($("sharpen").value).toFixed(2);
  });
  $("detail").addEventListener("change", updateDetailHint);
  $("model").addEventListener("change", updateDetailHint);
  $("api-key").addEventListener("change", async () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    hideError();
    try {
      await loadModels();
    } catch (error) {
      showError(error.message);
    }
    updateReady();
  });
  $("slider").addEventListener("input", () => {
    $("compare").style.setProperty("--pos", `${$("slider").value}%`);
  });
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("cancel").addEventListener("click", cancel);
}

function updateDetailHint() {
  const detail = $("detail").checked;
  const explicit = $("model").value;
  const name = explicit || (detail ? state.defaults.detail_on : state.defaults.detail_off);
  const text = detail
    ? "On: restores real-world photos. Cleans compression artefacts and noise, and rebuilds fine texture."
    : "Off: faithful enlargement. Keeps what is in the image and invents nothing.";
  const using = name ? ` Model: ${name}${explicit ? " (chosen below)" : ""}.` : "";
  $("detail-hint").textContent = text + using;
}

function chooseFile(file) {
  hideError();
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image.`);
    return;
  }
  if (state.limits.max_upload_bytes && file.size > state.limits.max_upload_bytes) {
    showError(`${file.name} is ${formatBytes(file.size)}; this server takes up to ${formatBytes(state.limits.max_upload_bytes)}.`);
    return;
  }
  state.file = file;
  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = URL.createObjectURL(file);
  const thumb = $("thumb");
  describeFile(file, null);
  thumb.onload = () => {
    thumb.hidden = false;
    describeFile(file, `${thumb.naturalWidth}×${thumb.naturalHeight}`);
  };
  thumb.onerror = () => {
    thumb.hidden = true; // not viewable here (e.g. TIFF): the server may still read it
  };
  thumb.src = state.originalUrl;
  updateReady();
}

function describeFile(file, dimensions) {
  const strong = document.createElement("strong");
  strong.textContent = file.name;
  const detail = document.createElement("span");
  detail.textContent = [dimensions, formatBytes(file.size), "click to change"]
    .filter(Boolean)
    .join(" · ");
  $("drop-text").replaceChildren(strong, detail);
}

function updateReady() {
  const needsKey = state.authRequired && !$("api-key").value.trim();
  $("go").disabled = !state.file || Boolean(state.jobId) || needsKey;
}

// -- a run -------------------------------------------------------------------------------

function formData() {
  const data = new FormData();
  data.append("file", state.file, state.file.name);
  data.append("scale", document.querySelector("input[name=scale]:checked").value);
  data.append("sharpen", $("sharpen").value);
  data.append("detail", $("detail").checked ? "true" : "false");
  if ($("face").checked) data.append("face", "on");
  data.append("format", "png");
  if ($("model").value) data.append("model", $("model").value);
  return data;
}

async function run() {
  if (!state.file || state.jobId) return;
  hideError();
  state.stopped = false;
  const started = performance.now();
  setRunning(true);
  setStatus("Uploading…", null);
  try {
    const job = await submit();
    state.jobId = job.id;
    const finished = await poll(job.id);
    if (finished.status === "done") {
      await showResult(finished, (performance.now() - started) / 1000);
    } else if (finished.status === "cancelled") {
      setStatus("Cancelled.", 0);
    } else {
      $("status").hidden = true;
      showError((finished.error && finished.error.detail) || `The job ended as ${finished.status}.`);
    }
  } catch (error) {
    $("status").hidden = true;
    if (!state.stopped) showError(error.message);
  } finally {
    state.jobId = null;
    setRunning(false);
  }
}

async function submit() {
  // A full queue answers 429 with Retry-After: wait as told, a few times, then give up.
  for (let attempt = 0; ; attempt++) {
    try {
      return await (await api("/v1/jobs", { method: "POST", body: formData() })).json();
    } catch (error) {
      if (error.status !== 429 || attempt >= 5 || state.stopped) throw error;
      const wait = Math.max(1, error.retryAfter || 2);
      setStatus(`The server is busy; trying again in ${wait} s…`, null);
      await sleep(wait * 1000);
    }
  }
}

async function poll(id) {
  for (;;) {
    const job = await (await api(`/v1/jobs/${id}`)).json();
    describe(job);
    if (!["queued", "running"].includes(job.status)) return job;
    await sleep(POLL_MS);
  }
}

function describe(job) {
  const { stage, done, total, fraction } = job.progress;
  if (job.status === "queued") {
    setStatus(`Waiting in the queue (position ${job.queue_position || 1})…`, null);
  } else if (stage === "loading_model") {
    setStatus(`Loading ${job.model} (the first use converts it once)…`, null);
  } else if (stage === "upscaling" && total) {
    setStatus(`Upscaling: tile ${done} of ${total}`, fraction);
  } else if (stage === "encoding") {
    setStatus("Saving the result…", 1);
  } else if (job.status === "running") {
    setStatus("Upscaling…", null);
  }
}

async function showResult(job, seconds) {
  setStatus("Fetching the result…", 1);
  const blob = await (await api(job.result_url)).blob();
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(blob);
  const after = $("after");
  const loaded = new Promise((resolve, reject) => {
    after.onload = resolve;
    after.onerror = () => reject(new Error("The result could not be shown."));
  });
  after.src = state.resultUrl;
  $("before").src = state.originalUrl;
  await loaded;
  $("slider").value = 50;
  const compare = $("compare");
  compare.style.setProperty("--pos", "50%");
  compare.style.setProperty("--aspect", String(after.naturalWidth / after.naturalHeight));
  $("empty").hidden = true;
  $("compare").hidden = false;
  $("result-bar").hidden = false;
  const [inW, inH] = job.input_size;
  const [outW, outH] = job.output_size;
  $("meta").textContent = `${inW}×${inH} → ${outW}×${outH} · ${job.model} · ${seconds.toFixed(1)} s`;
  const stem = state.file.name.replace(/\.[^.]+$/, "") || "image";
  const download = $("download");
  download.href = state.resultUrl;
  download.download = `${stem}_x${job.scale}.png`;
  const notes = $("notes");
  notes.replaceChildren(
    ...job.notes.map((note) => {
      const item = document.createElement("li");
      item.textContent = note;
      return item;
    }),
  );
  notes.hidden = job.notes.length === 0;
  setStatus("Done.", 1);
  // On a phone the result is below the controls: bring it into view.
  if (window.matchMedia("(max-width: 760px)").matches) {
    $("result").scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

async function cancel() {
  state.stopped = true;
  if (!state.jobId) return;
  setStatus("Cancelling…", null);
  try {
    await api(`/v1/jobs/${state.jobId}`, { method: "DELETE" });
  } catch (error) {
    showError(error.message);
  }
}

// -- small view helpers ------------------------------------------------------------------

function setRunning(running) {
  $("cancel").hidden = !running;
  $("go").textContent = running ? "Working…" : "Upscale";
  updateReady();
  if (running) $("go").disabled = true;
}

function setStatus(text, fraction) {
  $("status").hidden = false;
  $("status-text").textContent = text;
  const bar = $("progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

function formatBytes(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(bytes >= 10 << 20 ? 0 : 1)} MB`;
  if (bytes >= 1 << 10) return `${Math.round(bytes / (1 << 10))} KB`;
  return `${bytes} bytes`;
}

init();
