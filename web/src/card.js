// One upload on the page: name, progress, speed, time left, the chunk map and its buttons.
import { formatBytes, formatDuration } from "./format.js";

const LABELS = {
  queued: "waiting",
  hashing: "hashing",
  checking: "checking",
  uploading: "uploading",
  finishing: "verifying",
  done: "done",
  paused: "paused",
  failed: "failed",
  cancelled: "cancelled",
};
const ACTIONS = {
  pause: ["queued", "hashing", "checking", "uploading"],
  resume: ["paused"],
  retry: ["failed"],
  cancel: ["queued", "hashing", "checking", "uploading", "paused", "failed"],
};
const SPEED_WINDOW = 5000; // ms of history behind the speed figure

/** Speed over the last few seconds, from samples of a growing byte count. */
class Speedometer {
  samples = [];

  add(bytes, now = performance.now()) {
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW) this.samples.shift();
  }

  perSecond() {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples.at(-1);
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }

  reset() {
    this.samples = [];
  }
}

export function createCard(upload, template) {
  const root = template.content.firstElementChild.cloneNode(true);
  const $ = (selector) => root.querySelector(selector);
  root.dataset.name = upload.file.name;
  $(".name").textContent = upload.file.name;
  $(".size").textContent = formatBytes(upload.file.size);
  for (const button of root.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => upload[button.dataset.action]());
  }
  const speed = new Speedometer();
  let cells = [];
  let scheduled = false;

  function drawChunks() {
    const map = $(".chunks");
    if (cells.length !== upload.chunks.length) {
      map.replaceChildren(...upload.chunks.map(() => document.createElement("i")));
      cells = [...map.children];
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
    const hashing = state === "hashing";
    const done = hashing ? upload.hashed : upload.uploaded;
    const fraction = file.size ? done / file.size : state === "done" ? 1 : 0;
    const bar = $(".bar");
    bar.value = fraction;
    $(".badge").textContent = upload.offline ? "offline" : upload.instant && state === "done" ? "instant" : LABELS[state];
    if (state === "uploading" || hashing) speed.add(done);
    else speed.reset();
    const rate = speed.perSecond();
    const parts = [`${(fraction * 100).toFixed(1)} %`, `${formatBytes(done)} of ${formatBytes(file.size)}`];
    if (hashing) parts.unshift("hashing");
    if (rate > 0) {
      parts.push(`${formatBytes(rate)}/s`, `${formatDuration((file.size - done) / rate)} left`);
    }
    $(".figures").textContent = parts.join(" · ");
    $(".message").textContent = upload.offline ? "Waiting for the network…" : upload.message;
    for (const button of root.querySelectorAll("button[data-action]")) {
      button.hidden = !ACTIONS[button.dataset.action].includes(state);
    }
    const link = $(".download");
    link.hidden = !upload.url;
    if (upload.url) {
      link.href = upload.downloadUrl;
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
