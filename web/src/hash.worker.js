// @ts-check
// Hashing off the main thread, so the page never freezes: SHA-256 of a whole file (with
// progress), and the answer to a proof-of-possession challenge.
import { createSHA256 } from "hash-wasm";

/** @typedef {import("./hasher.js").Job} Job */
/** @typedef {import("./hasher.js").Report} Report */

const scope = /** @type {DedicatedWorkerGlobalScope} */ (/** @type {unknown} */ (self));
const BLOCK = 8 << 20; // bytes read per step: large enough to be fast, small enough for memory

/** @param {Report} report */
const report = (report) => scope.postMessage(report);

/** @param {Blob} file */
async function hashFile(file) {
  const hasher = await createSHA256();
  hasher.init();
  for (let position = 0; position < file.size; ) {
    const end = Math.min(file.size, position + BLOCK);
    hasher.update(new Uint8Array(await file.slice(position, end).arrayBuffer()));
    position = end;
    report({ kind: "progress", done: position });
  }
  return hasher.digest("hex");
}

/**
 * SHA-256(nonce || the bytes of each named range), as the server computes it.
 * @param {Blob} file
 * @param {Uint8Array} nonce
 * @param {number[][]} ranges inclusive [first, last] byte positions
 */
async function prove(file, nonce, ranges) {
  const hasher = await createSHA256();
  hasher.init();
  hasher.update(nonce);
  for (const [first, last] of ranges) {
    hasher.update(new Uint8Array(await file.slice(first, last + 1).arrayBuffer()));
  }
  return hasher.digest("binary");
}

scope.onmessage = async (/** @type {MessageEvent<Job>} */ { data }) => {
  try {
    if (data.kind === "hash") {
      report({ kind: "done", result: await hashFile(data.file) });
    } else if (data.kind === "prove") {
      report({ kind: "done", result: await prove(data.file, data.nonce, data.ranges) });
    }
  } catch (error) {
    report({ kind: "error", message: String(error instanceof Error ? error.message : error) });
  }
};
