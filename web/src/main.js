// @ts-check
// The page: file selection, the list of uploads, unfinished and completed ones, batch progress.
import { createCard } from "./card.js";
import { NetworkError, ServerError } from "./errors.js";
import { formatBytes } from "./format.js";
import { abortAll, request, setToken } from "./http.js";
import { UploadState } from "./states.js";
import * as store from "./store.js";
import { expiresOf } from "./tus.js";
import { FileUpload } from "./upload.js";

/** @typedef {import("./limits.js").Info} Info */

/** The page's elements are all there from the start (index.html). */
const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
/** @param {string} selector */
const input = (selector) => /** @type {HTMLInputElement} */ ($(selector));
/** @type {FileUpload[]} */
const uploads = [];
/** @type {Info} */
let info;
/** @type {string} */
let endpoint;

async function loadInfo() {
  const response = await fetch("api/info", { cache: "no-store" });
  if (!response.ok) throw new Error(`cannot read the server's limits (${response.status})`);
  info = await response.json();
  endpoint = new URL(info.tus.endpoint, location.href).href;
  const limits = [];
  if (info.max_size) limits.push(`files up to ${formatBytes(info.max_size)}`);
  if (info.allowed_types?.length) limits.push(`only ${info.allowed_types.join(", ")}`);
  if (info.denied_types?.length) limits.push(`not ${info.denied_types.join(", ")}`);
  $("#limits").textContent = limits.length ? `This server takes ${limits.join("; ")}.` : "";
}

/** The access token field, shown when the server takes credentials; kept for this tab, or on
 * this device when asked (never in a cookie, so no other site can make the browser use it). */
function wireToken() {
  const token = input("#token");
  const remember = input("#remember");
  $("#auth").hidden = !info.auth?.accepted;
  token.value = localStorage.getItem("haul.token") ?? sessionStorage.getItem("haul.token") ?? "";
  remember.checked = localStorage.getItem("haul.token") !== null;
  const save = () => {
    const value = token.value.trim();
    setToken(value);
    localStorage.removeItem("haul.token");
    sessionStorage.removeItem("haul.token");
    if (value) (remember.checked ? localStorage : sessionStorage).setItem("haul.token", value);
  };
  token.addEventListener("change", save);
  remember.addEventListener("change", save);
  save();
}

const hasToken = () => Boolean(input("#token").value.trim());

function concurrency() {
  return Number(/** @type {HTMLSelectElement} */ ($("#concurrency")).value) || 4;
}

/** @param {File[]} files */
function addFiles(files) {
  const template = /** @type {HTMLTemplateElement} */ ($("#card-template"));
  for (const file of files) {
    const upload = new FileUpload(file, { endpoint, info, concurrency: concurrency(), hasToken });
    uploads.push(upload);
    $("#uploads").prepend(createCard(upload, template));
    upload.addEventListener("change", () => {
      scheduleBatch();
      if (upload.state === UploadState.DONE || upload.state === UploadState.CANCELLED) showSaved();
    });
    upload.start();
  }
  showSaved();
  scheduleBatch();
}

let batchScheduled = false;
function scheduleBatch() {
  if (batchScheduled) return;
  batchScheduled = true;
  requestAnimationFrame(() => {
    batchScheduled = false;
    const counted = uploads.filter((u) => u.state !== UploadState.CANCELLED);
    const total = counted.reduce((sum, u) => sum + u.file.size, 0);
    const done = counted.reduce((sum, u) => sum + Math.min(u.uploaded, u.file.size), 0);
    const finished = counted.filter((u) => u.state === UploadState.DONE).length;
    $("#batch").hidden = counted.length === 0;
    /** @type {HTMLProgressElement} */ ($("#batch-bar")).value = total ? done / total : finished === counted.length ? 1 : 0;
    $("#batch-text").textContent =
      `${finished} of ${counted.length} files done · ` +
      `${formatBytes(done)} of ${formatBytes(total)}`;
  });
}

/** Unfinished uploads from earlier visits (choose the file again to go on) and finished ones. */
async function showSaved() {
  const entries = await store.all();
  const active = new Set(uploads.filter((u) => u.state !== UploadState.CANCELLED).map((u) => u.key));
  const unfinished = entries.filter(isUnfinished).filter((e) => !active.has(e.key));
  const list = $("#unfinished ul");
  list.replaceChildren(
    ...unfinished.map((entry) => {
      const item = document.createElement("li");
      item.dataset.name = entry.name;
      item.textContent = `${entry.name} (${formatBytes(entry.size)}), started ${new Date(entry.createdAt).toLocaleString()}`;
      const choose = document.createElement("button");
      choose.textContent = "Choose file…";
      choose.addEventListener("click", () => $("#picker").click());
      const forget = document.createElement("button");
      forget.textContent = "Forget";
      forget.addEventListener("click", async () => {
        const urls = [...entry.parts, entry.final ?? null].filter((url) => url !== null);
        await Promise.allSettled(urls.map((url) => request("DELETE", url)));
        await store.remove(entry.key);
        showSaved();
      });
      item.append(choose, forget);
      return item;
    }),
  );
  $("#unfinished").hidden = unfinished.length === 0;
  const finished = entries.filter(store.isFinished).sort((a, b) => b.doneAt - a.doneAt);
  $("#completed ul").replaceChildren(
    ...finished.map((entry) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = entry.url;
      link.download = entry.name;
      link.textContent = entry.name;
      link.addEventListener("click", (event) => openSigned(event, entry.url));
      item.append(link, ` (${formatBytes(entry.size)})`);
      if (entry.instant) {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = "instant";
        item.append(tag);
      }
      return item;
    }),
  );
  $("#completed").hidden = finished.length === 0;
}

/** Unfinished uploads past their last known expiry are forgotten once the server confirms
 * that none of their chunks is left (a write the page did not hear of may have kept one). */
async function forgetExpired() {
  const now = Date.now();
  const stale = (await store.all())
    .filter(isUnfinished)
    .filter((e) => e.expiresAt && e.expiresAt < now);
  for (const entry of stale) {
    let alive = false;
    for (const url of entry.parts.filter((url) => url !== null)) {
      try {
        const answer = await request("HEAD", url);
        entry.expiresAt = expiresOf(answer) || null;
        alive = true;
        break;
      } catch (error) {
        if (!(error instanceof ServerError && [404, 410].includes(error.status))) {
          alive = true; // cannot tell now: keep it
          break;
        }
      }
    }
    await (alive ? store.save(entry) : store.remove(entry.key));
  }
}

/**
 * With credentials, a finished upload opens through a freshly signed link.
 * @param {Event} event
 * @param {string} url
 */
async function openSigned(event, url) {
  if (!hasToken()) return;
  event.preventDefault();
  try {
    const answer = await request("HEAD", url);
    const link = answer.header("Haul-Download-Link");
    location.assign(link ? new URL(link, url).href : url);
  } catch (error) {
    alert(error instanceof Error ? error.message : String(error));
  }
}

function wireInputs() {
  const picker = input("#picker");
  picker.addEventListener("change", () => {
    addFiles([...(picker.files ?? [])]);
    picker.value = "";
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = [...(event.dataTransfer?.files ?? [])];
    addFiles(files.filter((file) => file.size || file.type));
  });
  const select = /** @type {HTMLSelectElement} */ ($("#concurrency"));
  select.value = localStorage.getItem("haul.concurrency") ?? "4";
  select.addEventListener("change", () => localStorage.setItem("haul.concurrency", select.value));
  window.addEventListener("offline", () => {
    $("#offline").hidden = false;
    abortAll(new NetworkError("the browser went offline"));
  });
  window.addEventListener("online", () => {
    $("#offline").hidden = true;
  });
}

async function main() {
  wireInputs();
  try {
    await loadInfo();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    $("#limits").textContent = `The server cannot be reached: ${reason}`;
    return;
  }
  wireToken();
  await store.pruneFinished();
  await forgetExpired();
  await showSaved();
  document.body.dataset.ready = "true";
}

/** @param {import("./store.js").Entry} entry @returns {entry is import("./store.js").Unfinished} */
const isUnfinished = (entry) => !entry.done;

main();
