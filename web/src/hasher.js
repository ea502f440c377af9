// @ts-check
// The main thread's side of hash.worker.js: one worker per job, ended when the job ends.

/**
 * @typedef {{ kind: "hash", file: Blob }
 *   | { kind: "prove", file: Blob, nonce: Uint8Array, ranges: number[][] }} Job
 * @typedef {{ kind: "progress", done: number }
 *   | { kind: "done", result: unknown }
 *   | { kind: "error", message: string }} Report
 */

/**
 * @param {Job} message
 * @param {((done: number) => void) | undefined} onProgress
 * @param {AbortSignal | undefined} signal
 * @returns {Promise<unknown>}
 */
function run(message, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("hash.worker.js", import.meta.url), { type: "module" });
    const stop = () => {
      worker.terminate();
      reject(new DOMException("hashing stopped", "AbortError"));
    };
    signal?.addEventListener("abort", stop, { once: true });
    const finish = () => {
      signal?.removeEventListener("abort", stop);
      worker.terminate();
    };
    worker.onmessage = (/** @type {MessageEvent<Report>} */ { data }) => {
      if (data.kind === "progress") onProgress?.(data.done);
      else if (data.kind === "done") {
        finish();
        resolve(data.result);
      } else {
        finish();
        reject(new Error(`cannot read the file: ${data.message}`));
      }
    };
    worker.onerror = (event) => {
      finish();
      reject(new Error(`the hashing worker failed: ${event.message}`));
    };
    worker.postMessage(message);
  });
}

/**
 * Hex SHA-256 of the whole file.
 * @param {Blob} file
 * @param {(done: number) => void} onProgress bytes hashed so far
 * @param {AbortSignal} signal
 */
export async function hashFile(file, onProgress, signal) {
  return /** @type {string} */ (await run({ kind: "hash", file }, onProgress, signal));
}

/**
 * Base64 answer to a `Haul-Challenge: <base64 nonce> a-b,c-d` header.
 * @param {Blob} file
 * @param {string} header
 */
export async function answerChallenge(file, header) {
  const [nonce64, spans] = header.trim().split(" ");
  const nonce = Uint8Array.from(atob(nonce64), (c) => c.charCodeAt(0));
  const ranges = (spans ?? "").split(",").map((span) => span.split("-").map(Number));
  if (ranges.some(([a, b]) => !(a >= 0 && b >= a && b < file.size))) {
    throw new Error("the server asked for bytes the file does not have");
  }
  const digest = /** @type {Uint8Array} */ (await run({ kind: "prove", file, nonce, ranges }, undefined, undefined));
  return btoa(String.fromCharCode(...digest));
}
