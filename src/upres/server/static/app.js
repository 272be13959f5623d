// The upres page: pick an image, queue a job, poll its progress, compare and download.
// Plain browser JavaScript: no build step, nothing loaded from elsewhere.
// Every visible string comes from messages.json (English and Simplified Chinese); the
// service's errors are translated by their stable `code`, its English `detail` shown below.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const KEY_STORAGE = "upres-api-key";
const LANG_STORAGE = "upres-lang";
const LANGUAGES = { en: "en", zh: "zh-CN" };

const state = {
  file: null,
  fileSize: null, // "96×64" once the preview has loaded
  imageSize: null, // [width, height] once the preview has loaded (not for TIFF)
  askedExact: false, // the running job asked for an exact size (not a scale)
  originalUrl: null,
  resultUrl: null,
  jobId: null,
  limits: {},
  defaults: {},
  models: [],
  authRequired: false,
  stopped: false,
  // What is on screen, kept as message keys so a language switch can redraw it.
  status: null, // {key, vars, fraction}
  error: null, // {key, vars, detail}
};

// -- languages ---------------------------------------------------------------------------

const i18n = { lang: "en", messages: { en: {} } };

function t(key, vars = {}) {
  const text = (i18n.messages[i18n.lang] || {})[key] ?? i18n.messages.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

function has(key) {
  return key in (i18n.messages.en || {});
}

function browserLanguage() {
  // The server read Accept-Language into data-lang; navigator.languages says the same.
  const fromServer = document.documentElement.dataset.lang;
  if (fromServer in LANGUAGES) return fromServer;
  const wanted = navigator.languages && navigator.languages.length
    ? navigator.languages
    : [navigator.language || "en"];
  for (const tag of wanted) {
    const primary = tag.toLowerCase().split("-")[0];
    if (primary in LANGUAGES) return primary;
  }
  return "en";
}

function chosenLanguage() {
  const stored = localStorage.getItem(LANG_STORAGE);
  return stored in LANGUAGES ? stored : browserLanguage();
}

async function loadMessages() {
  try {
    i18n.messages = await (await fetch("/static/messages.json")).json();
  } catch {
    i18n.messages = { en: {} }; // the page's English markup stays as it is
  }
}

function setLanguage(lang, remember) {
  i18n.lang = lang in LANGUAGES ? lang : "en";
  if (remember) localStorage.setItem(LANG_STORAGE, i18n.lang);
  document.documentElement.lang = LANGUAGES[i18n.lang];
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const [attribute, data] of [
    ["placeholder", "i18nPlaceholder"],
    ["aria-label", "i18nAriaLabel"],
    ["alt", "i18nAlt"],
  ]) {
    for (const element of document.querySelectorAll(`[data-i18n-${attribute}]`)) {
      element.setAttribute(attribute, t(element.dataset[data]));
    }
  }
  for (const button of document.querySelectorAll("#lang button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === i18n.lang));
  }
  redraw();
}

function redraw() {
  showLimits();
  updateSize();
  renderModels();
  updateDetailHint();
  if (state.file) describeFile();
  if (state.status) setStatus(state.status.key, state.status.vars, state.status.fraction);
  if (state.error) renderError();
  $("go").textContent = t(state.jobId ? "working" : "go");
}

// -- talking to the server ---------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

class ServiceRefusal extends Error {
  constructor(status, body, retryAfter) {
    super(body.detail || body.error || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { ...authHeaders(), ...(options.headers || {}) },
    });
  } catch {
    throw new ServiceRefusal(0, { code: "network" }, 0);
  }
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      body = { detail: `${response.status} ${response.statusText}` };
    }
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new ServiceRefusal(response.status, body, retryAfter);
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- start-up: languages, limits, key, models --------------------------------------------

async function init() {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  bindControls();
  await loadMessages();
  setLanguage(chosenLanguage(), false);
  try {
    const health = await (await fetch("/healthz")).json();
    state.limits = health.limits || {};
    state.authRequired = Boolean(health.auth_required);
    $("key-field").hidden = !state.authRequired;
    showLimits();
    await loadModels();
  } catch (error) {
    showError(failure(error));
  }
  updateDetailHint();
  updateReady();
}

async function loadModels() {
  if (state.authRequired && !$("api-key").value.trim()) return;
  const body = await (await api("/v1/models")).json();
  state.models = body.models;
  state.defaults = body.defaults || {};
  renderModels();
  updateDetailHint();
}

function modelLabel(model) {
  const scale = model.scale ? ` (×${model.scale})` : "";
  if (!model.available) return `${model.name}${scale} — ${t(`state.${model.state}`)}`;
  if (!model.ready) return `${model.name}${scale} · ${t("model.download_allowed")}`;
  return `${model.name}${scale}`;
}

function renderModels() {
  const select = $("model");
  const chosen = select.value;
  select.querySelectorAll("optgroup").forEach((group) => group.remove());
  const groups = [
    ["user", (m) => m.available && m.role === "user"],
    ["faithful", (m) => m.available && m.role === "faithful"],
    ["restoration", (m) => m.available && m.role === "restoration"],
    ["other", (m) => m.available && m.role === "other"],
    ["unavailable", (m) => !m.available], // last, greyed, each with its reason
  ];
  for (const [name, belongs] of groups) {
    const members = state.models.filter(belongs);
    if (!members.length) continue;
    const group = document.createElement("optgroup");
    group.label = t(`model.group.${name}`);
    for (const model of members) {
      const option = new Option(modelLabel(model), model.name);
      option.disabled = !model.available;
      option.title = model.available ? model.summary : model.reason || model.summary;
      option.dataset.state = model.state;
      group.append(option);
    }
    select.append(group);
  }
  select.value = chosen;
  if (select.value !== chosen) select.value = "";
}

function showLimits() {
  const { max_upload_bytes: bytes, max_input_size: side } = state.limits;
  const parts = [t("limits.formats")];
  if (bytes) parts.push(t("limits.bytes", { size: formatBytes(bytes) }));
  if (side) parts.push(t("limits.side", { side }));
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
  for (const button of document.querySelectorAll("#lang button")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang, true));
  }
  $("sharpen").addEventListener("input", () => {
    $("sharpen-value").value = Number($("sharpen").value).toFixed(2);
  });
  $("detail").addEventListener("change", updateDetailHint);
  for (const radio of document.querySelectorAll("input[name=size-mode], input[name=scale]")) {
    radio.addEventListener("change", updateSize);
  }
  $("exact-pixels").addEventListener("input", updateSize);
  $("exact-side").addEventListener("change", updateSize);
  $("model").addEventListener("change", updateDetailHint);
  $("api-key").addEventListener("change", async () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    hideError();
    try {
      await loadModels();
    } catch (error) {
      showError(failure(error));
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
  const text = t(detail ? "detail.on" : "detail.off");
  const using = name ? t(explicit ? "detail.model_chosen" : "detail.model", { name }) : "";
  // Chinese sentences follow each other without a space.
  $("detail-hint").textContent = [text, using].filter(Boolean).join(i18n.lang === "zh" ? "" : " ");
}

function chooseFile(file) {
  hideError();
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError({ key: "file.not_image", vars: { name: file.name } });
    return;
  }
  if (state.limits.max_upload_bytes && file.size > state.limits.max_upload_bytes) {
    const vars = {
      name: file.name,
      size: formatBytes(file.size),
      limit: formatBytes(state.limits.max_upload_bytes),
    };
    showError({ key: "file.too_big", vars });
    return;
  }
  state.file = file;
  state.fileSize = null;
  state.imageSize = null;
  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = URL.createObjectURL(file);
  const thumb = $("thumb");
  describeFile();
  thumb.onload = () => {
    thumb.hidden = false;
    state.fileSize = `${thumb.naturalWidth}×${thumb.naturalHeight}`;
    state.imageSize = [thumb.naturalWidth, thumb.naturalHeight];
    describeFile();
    updateSize();
  };
  thumb.onerror = () => {
    thumb.hidden = true; // not viewable here (e.g. TIFF): the server may still read it
  };
  thumb.src = state.originalUrl;
  updateSize();
  updateReady();
}

// -- the result's size: a scale, or an exact width, height or long side (aspect kept) ----

function exactMode() {
  return document.querySelector("input[name=size-mode]:checked").value === "exact";
}

function exactPixels() {
  // A positive whole number, as the service asks; anything else (1.5, 1e3, 0, empty) is null.
  const text = $("exact-pixels").value.trim();
  return /^[0-9]+$/.test(text) && Number(text) > 0 ? Number(text) : null;
}

function pythonRound(x) {
  // Python's round (half to even), so that the page's sizes are the service's to the pixel.
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function modelInput([width, height]) {
  // The service reduces a side above max_input_size first (upres.request.downsized).
  const limit = state.limits.max_input_size;
  const longest = Math.max(width, height);
  if (!limit || longest <= limit) return [width, height];
  const ratio = limit / longest;
  return [Math.max(1, pythonRound(width * ratio)), Math.max(1, pythonRound(height * ratio))];
}

function expectedSize(size) {
  // The service's own rule (UpscaleRequest.output_size, same arithmetic) on the reduced
  // input: the scale, or the exact side with the other one following the aspect.
  const [width, height] = modelInput(size);
  const side = (x) => Math.max(1, pythonRound(x));
  if (!exactMode()) {
    const factor = Number(document.querySelector("input[name=scale]:checked").value);
    return [side(width * factor), side(height * factor)];
  }
  const pixels = exactPixels();
  const which = $("exact-side").value;
  if (which === "width") return [pixels, side((height * pixels) / width)];
  if (which === "height") return [side((width * pixels) / height), pixels];
  const ratio = pixels / Math.max(width, height);
  return [side(width * ratio), side(height * ratio)];
}

function sizeProblem() {
  // What the service would refuse, said before anything is sent (null: nothing known wrong).
  if (exactMode() && exactPixels() === null) return { key: "size.invalid", vars: {} };
  if (!state.imageSize) return null; // not previewable here: the service will judge
  const [width, height] = expectedSize(state.imageSize);
  const [inWidth, inHeight] = modelInput(state.imageSize);
  const scale = Math.max(width / inWidth, height / inHeight);
  const { max_scale: mostScale, max_output_pixels: most } = state.limits;
  if (mostScale && scale > mostScale) {
    const vars = { width, height, scale: String(+scale.toFixed(2)), limit: String(mostScale) };
    return { key: "size.scale_too_large", vars };
  }
  if (most && width * height > most) {
    const limit = (most / 1e6).toFixed(1); // megapixels
    return { key: "size.too_large", vars: { width, height, limit } };
  }
  return null;
}

function updateSize() {
  const exact = exactMode();
  $("scale-choice").hidden = exact;
  $("exact-choice").hidden = !exact;
  const problem = sizeProblem();
  $("exact-pixels").setAttribute("aria-invalid", String(Boolean(problem) && exact));
  const hint = $("size-hint");
  hint.classList.toggle("invalid", Boolean(problem));
  if (problem) {
    hint.textContent = t(problem.key, problem.vars);
  } else if (state.imageSize) {
    const [width, height] = expectedSize(state.imageSize);
    hint.textContent = t("size.result", { width, height });
  } else {
    hint.textContent = "";
  }
  hint.hidden = !hint.textContent;
}

function describeFile() {
  const file = state.file;
  const strong = document.createElement("strong");
  strong.textContent = file.name;
  const detail = document.createElement("span");
  detail.textContent = [state.fileSize, formatBytes(file.size), t("drop.change")]
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
  if (exactMode()) data.append($("exact-side").value, String(exactPixels()));
  else data.append("scale", document.querySelector("input[name=scale]:checked").value);
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
  const problem = sizeProblem();
  if (problem) {
    showError(problem);
    if (exactMode()) $("exact-pixels").focus();
    return;
  }
  state.askedExact = exactMode(); // the download's name says what was asked
  state.stopped = false;
  const started = performance.now();
  setRunning(true);
  setStatus("status.uploading", {}, null);
  try {
    const job = await submit();
    state.jobId = job.id;
    const finished = await poll(job.id);
    if (finished.status === "done") {
      await showResult(finished, (performance.now() - started) / 1000);
    } else if (finished.status === "cancelled") {
      setStatus("status.cancelled", {}, 0);
    } else {
      hideStatus();
      const body = finished.error || {};
      showError(body.code || body.error
        ? refusal(body, 0)
        : { key: "error.ended", vars: { status: finished.status } });
    }
  } catch (error) {
    hideStatus();
    if (!state.stopped) showError(failure(error));
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
      setStatus("status.busy", { seconds: wait }, null);
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
  const model = job.model;
  if (job.status === "queued") {
    setStatus("status.queued", { position: job.queue_position || 1 }, null);
  } else if (stage === "downloading") {
    const vars = { model, done: formatBytes(done), total: formatBytes(total) };
    setStatus(total ? "status.downloading" : "status.downloading_unknown", vars, total ? fraction : null);
  } else if (stage === "loading_model") {
    setStatus("status.loading", { model }, null);
  } else if (stage === "upscaling" && total) {
    setStatus("status.tiles", { done, total }, fraction);
  } else if (stage === "encoding") {
    setStatus("status.encoding", {}, 1);
  } else if (job.status === "running") {
    setStatus("status.running", {}, null);
  }
}

async function showResult(job, seconds) {
  setStatus("status.fetching", {}, 1);
  const blob = await (await api(job.result_url)).blob();
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(blob);
  const after = $("after");
  const loaded = new Promise((resolve, reject) => {
    after.onload = resolve;
    after.onerror = () => reject(Object.assign(new Error("show"), { key: "error.show" }));
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
  $("meta").textContent = `${inW}×${inH} → ${outW}×${outH} · ${job.model} · ${seconds.toFixed(1)}\u00a0s`;
  const stem = state.file.name.replace(/\.[^.]+$/, "") || "image";
  const download = $("download");
  download.href = state.resultUrl;
  const size = state.askedExact ? `${outW}x${outH}` : `x${job.scale}`;
  download.download = `${stem}_${size}.png`;
  const notes = $("notes");
  notes.replaceChildren(
    ...job.notes.map((note) => {
      const item = document.createElement("li");
      item.textContent = note; // the service's own words (English), like an error's detail
      item.lang = "en";
      return item;
    }),
  );
  notes.hidden = job.notes.length === 0;
  setStatus("status.done", {}, 1);
  // On a phone the result is below the controls: bring it into view.
  if (window.matchMedia("(max-width: 760px)").matches) {
    $("result").scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

async function cancel() {
  state.stopped = true;
  if (!state.jobId) return;
  setStatus("status.cancelling", {}, null);
  try {
    await api(`/v1/jobs/${state.jobId}`, { method: "DELETE" });
  } catch (error) {
    showError(failure(error));
  }
}

// -- errors: a translated sentence by code, the service's English detail below -----------

function refusal(body, status) {
  const code = body.code || body.error;
  const vars = {
    name: state.file ? state.file.name : "",
    model: body.model || $("model").value || "",
    state: body.state || "", // translated when shown, so a language switch redraws it
    value: body.value ?? "",
    status,
  };
  const key = code && has(`error.${code}`) ? `error.${code}` : "error.generic";
  return { key, vars, detail: body.detail || "" };
}

function failure(error) {
  if (error instanceof ServiceRefusal) return refusal(error.body, error.status);
  if (error && error.key) return { key: error.key, vars: {} };
  return { key: "error.no_answer", vars: { detail: error ? error.message : "" } };
}

// -- small view helpers ------------------------------------------------------------------

function setRunning(running) {
  $("cancel").hidden = !running;
  $("go").textContent = t(running ? "working" : "go");
  updateReady();
  if (running) $("go").disabled = true;
}

function setStatus(key, vars, fraction) {
  state.status = { key, vars, fraction };
  $("status").hidden = false;
  $("status-text").textContent = t(key, vars);
  const bar = $("progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

function hideStatus() {
  state.status = null;
  $("status").hidden = true;
}

function showError(message) {
  state.error = message;
  renderError();
}

function renderError() {
  const { key, vars, detail } = state.error;
  const shown = vars.state ? { ...vars, state: t(`state.${vars.state}`) } : vars;
  $("error-text").textContent = t(key, shown);
  const below = $("error-detail");
  below.textContent = detail ? t("error.server_said", { detail }) : "";
  below.hidden = !detail;
  $("error").hidden = false;
}

function hideError() {
  state.error = null;
  $("error").hidden = true;
}

function formatBytes(bytes) {
  // A no-break space: a number never wraps away from its unit.
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(bytes >= 10 << 20 ? 0 : 1)}\u00a0MB`;
  if (bytes >= 1 << 10) return `${Math.round(bytes / (1 << 10))}\u00a0KB`;
  return `${bytes}\u00a0B`;
}

init();
