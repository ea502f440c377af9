// @ts-check
// Hashing off the main thread, so the page never freezes: SHA-256 of a whole file (with
// progress), the answer to a proof-of-possession challenge, and the checksum of each request's
// bytes (tus Upload-Checksum).
import { createCRC32, createMD5, createSHA1, createSHA256, createSHA512 } from "hash-wasm";

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

/** The tus checksum algorithms the page knows, by their tus names. */
const CHECKSUMS = { crc32: createCRC32, md5: createMD5, sha1: createSHA1, sha256: createSHA256, sha512: createSHA512 };

/**
 * The raw digest of a piece of the file, as Upload-Checksum carries it (base64 of this).
 * @param {Blob} piece
 * @param {string} algorithm
 */
async function checksum(piece, algorithm) {
  const create = CHECKSUMS[/** @type {keyof typeof CHECKSUMS} */ (algorithm)];
  if (!create) throw new Error(`unknown checksum algorithm ${algorithm}`);
  const hasher = await create();
  hasher.init();
  for (let position = 0; position < piece.size; position += BLOCK) {
    hasher.update(new Uint8Array(await piece.slice(position, position + BLOCK).arrayBuffer()));
  }
  return hasher.digest("binary");
}

scope.onmessage = async (/** @type {MessageEvent<Job>} */ { data }) => {
  try {
    if (data.kind === "hash") {
      report({ kind: "done", result: await hashFile(data.file) });
    } else if (data.kind === "prove") {
      report({ kind: "done", result: await prove(data.file, data.nonce, data.ranges) });
    } else if (data.kind === "checksum") {
      report({ kind: "done", result: await checksum(data.file, data.algorithm) });
    }
  } catch (error) {
    report({ kind: "error", message: String(error instanceof Error ? error.message : error) });
  }
};
