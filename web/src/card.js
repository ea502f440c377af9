// @ts-check
// One upload on the page: name, progress, speed, time left, the chunk map and its buttons.
import { formatBytes, formatDuration } from "./format.js";
import { offers, UploadState } from "./states.js";

/** @typedef {import("./upload.js").FileUpload} FileUpload */
/** @typedef {import("./states.js").Control} Control */

const S = UploadState;
/** The badge's word for each state. */
const LABELS = Object.freeze({
  [S.QUEUED]: "waiting",
  [S.HASHING]: "hashing",
  [S.CHECKING]: "checking",
  [S.UPLOADING]: "uploading",
  [S.FINISHING]: "verifying",
  [S.DONE]: "done",
  [S.PAUSED]: "paused",
  [S.FAILED]: "failed",
  [S.CANCELLED]: "cancelled",
});
const SPEED_WINDOW = 5000; // ms of history behind the speed figure

/** Speed over the last few seconds, from samples of a growing byte count. */
export class Speedometer {
  /** @type {[number, number][]} [ms, bytes] */
  samples = [];

  /** @param {number} bytes @param {number} [now] ms */
  add(bytes, now = performance.now()) {
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW) this.samples.shift();
  }

  perSecond() {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }

  reset() {
    this.samples = [];
  }
}

/**
 * The card of one upload, drawn again (once per frame at most) whenever the upload changes.
 * @param {FileUpload} upload
 * @param {HTMLTemplateElement} template
 */
export function createCard(upload, template) {
  const root = /** @type {HTMLElement} */ (
    /** @type {Element} */ (template.content.firstElementChild).cloneNode(true)
  );
  const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (root.querySelector(selector));
  root.dataset.name = upload.file.name;
  $(".name").textContent = upload.file.name;
  $(".size").textContent = formatBytes(upload.file.size);
  /** @type {NodeListOf<HTMLButtonElement>} */
  const buttons = root.querySelectorAll("button[data-action]");
  const controlOf = (/** @type {HTMLButtonElement} */ button) =>
    /** @type {Control} */ (button.dataset.action);
  for (const button of buttons) {
    button.addEventListener("click", () => upload[controlOf(button)]());
  }
  const speed = new Speedometer();
  /** @type {HTMLElement[]} */
  let cells = [];
  let scheduled = false;

  function drawChunks() {
    const map = $(".chunks");
    if (cells.length !== upload.chunks.length) {
      map.replaceChildren(...upload.chunks.map(() => document.createElement("i")));
      cells = /** @type {HTMLElement[]} */ ([...map.children]);
    }
    upload.chunks.forEach((chunk, index) => {
      const cell = cells[index];
      if (cell.dataset.state !== chunk.state) {
        cell.dataset.state = chunk.state;
        cell.title = `chunk ${index + 1}: ${formatBytes(chunk.length)}, ${chunk.state}`;
      }
    });
  }

  function draw() {
    scheduled = false;
    const { state, file } = upload;
    root.dataset.state = state;
    const hashing = state === S.HASHING;
    const done = hashing ? upload.hashed : upload.uploaded;
    const fraction = file.size ? done / file.size : state === S.DONE ? 1 : 0;
    const bar = /** @type {HTMLProgressElement} */ ($(".bar"));
    bar.value = fraction;
    $(".badge").textContent = upload.offline ? "offline" : upload.instant && state === S.DONE ? "instant" : LABELS[state];
    if (state === S.UPLOADING || hashing) speed.add(done);
    else speed.reset();
    const rate = speed.perSecond();
    const parts = [`${(fraction * 100).toFixed(1)} %`, `${formatBytes(done)} of ${formatBytes(file.size)}`];
    if (hashing) parts.unshift("hashing");
    if (rate > 0) {
      parts.push(`${formatBytes(rate)}/s`, `${formatDuration((file.size - done) / rate)} left`);
    }
    $(".figures").textContent = parts.join(" · ");
    $(".message").textContent = upload.offline ? "Waiting for the network…" : upload.message;
    for (const button of buttons) button.hidden = !offers(controlOf(button), state);
    const link = /** @type {HTMLAnchorElement} */ ($(".download"));
    link.hidden = !upload.url;
    if (upload.url) {
      link.href = upload.downloadUrl ?? upload.url;
      link.download = file.name;
    }
    drawChunks();
  }

  upload.addEventListener("change", () => {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  });
  draw();
  return root;
}
