// @ts-check
// The main thread's side of hash.worker.js: a worker of its own for each whole-file job, ended
// when the job ends; one long-lived worker for the many small checksum jobs, taking them in turn.

/**
 * @typedef {{ kind: "hash", file: Blob }
 *   | { kind: "prove", file: Blob, nonce: Uint8Array, ranges: number[][] }
 *   | { kind: "checksum", file: Blob, algorithm: string }} Job
 * @typedef {{ kind: "progress", done: number }
 *   | { kind: "done", result: unknown }
 *   | { kind: "error", message: string }} Report
 */

const spawn = () => new Worker(new URL("hash.worker.js", import.meta.url), { type: "module" });

/** The checksum worker, while it lives; and the end of its queue of jobs. */
/** @type {Worker | null} */
let shared = null;
/** @type {Promise<unknown>} */
let queue = Promise.resolve();

/**
 * @param {Job} message
 * @param {((done: number) => void) | undefined} onProgress
 * @param {AbortSignal | undefined} signal
 * @param {Worker} [worker] a worker that outlives the job (default: one of its own)
 * @returns {Promise<unknown>}
 */
function run(message, onProgress, signal, worker) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException("hashing stopped", "AbortError"));
      return;
    }
    const keep = worker !== undefined;
    const thread = worker ?? spawn();
    // A stopped or broken worker is ended: a job's late answer must never reach the next job.
    const finish = (/** @type {boolean} */ kept) => {
      signal?.removeEventListener("abort", stop);
      thread.onmessage = thread.onerror = null;
      if (kept) return;
      thread.terminate();
      if (thread === shared) shared = null;
    };
    const stop = () => {
      finish(false);
      reject(new DOMException("hashing stopped", "AbortError"));
    };
    signal?.addEventListener("abort", stop, { once: true });
    thread.onmessage = (/** @type {MessageEvent<Report>} */ { data }) => {
      if (data.kind === "progress") onProgress?.(data.done);
      else if (data.kind === "done") {
        finish(keep);
        resolve(data.result);
      } else {
        finish(keep);
        reject(new Error(`cannot read the file: ${data.message}`));
      }
    };
    thread.onerror = (event) => {
      finish(false);
      reject(new Error(`the hashing worker failed: ${event.message}`));
    };
    thread.postMessage(message);
  });
}

/**
 * The raw digest of `piece` with a tus checksum algorithm, computed in the checksum worker.
 * @param {Blob} piece
 * @param {string} algorithm
 * @param {AbortSignal} signal
 * @returns {Promise<Uint8Array>}
 */
export function checksum(piece, algorithm, signal) {
  const job = queue.then(() => {
    shared ??= spawn();
    return run({ kind: "checksum", file: piece, algorithm }, undefined, signal, shared);
  });
  queue = job.catch(() => undefined);
  return /** @type {Promise<Uint8Array>} */ (job);
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
