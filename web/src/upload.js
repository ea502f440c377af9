// @ts-check
// One file's upload: hash it (in a worker), try an instant upload, otherwise send its chunks
// as parallel tus partial uploads and join them with a final concatenation that declares the
// file's SHA-256, which the server checks before it calls the upload complete.
//
// Each PATCH also carries `Upload-Checksum` (the cheapest algorithm the server offers, computed
// in the worker), so a piece damaged on the way is refused (460) and only it is sent again. The
// server keeps all of a checksummed PATCH or none of it, so PATCHes are at most PIECE bytes: a
// request cut off costs at most that much to send again.
import { algorithmFor, checksumHeader } from "./checksum.js";
import { NetworkError, ServerError } from "./errors.js";
import { answerChallenge, checksum, hashFile } from "./hasher.js";
import { request } from "./http.js";
import { refusal } from "./limits.js";
import { pool } from "./pool.js";
import * as retry from "./retry.js";
import { ChunkState, UploadState } from "./states.js";
import * as states from "./states.js";
import * as store from "./store.js";
import * as tus from "./tus.js";

/** @typedef {import("./limits.js").Info} Info */
/** @typedef {import("./store.js").Unfinished} Unfinished */
/** @typedef {import("./tus.js").Answer} Answer */
/** @typedef {import("./states.js").UploadStateName} UploadStateName */
/**
 * One chunk of the file: a partial upload of its own (or the whole upload when single).
 * @typedef {object} Chunk
 * @property {number} index
 * @property {number} start byte position in the file
 * @property {number} length
 * @property {string | null} url
 * @property {number} offset bytes the server holds
 * @property {number} inflight bytes of the running PATCH sent so far
 * @property {import("./states.js").ChunkStateName} state
 * @property {string | null} creationKey the Idempotency-Key of its creation while it retries
 */

const MiB = 1 << 20;
const MIN_CHUNK = 8 * MiB;
const MAX_CHUNK = 64 * MiB;
const TARGET_CHUNKS = 1000; // keeps the final request's header list short
const PIECE = 4 * MiB; // the most one checksummed PATCH carries

/** About TARGET_CHUNKS chunks, each a whole number of MiB within [8 MiB, 64 MiB].
 * @param {number} size */
export function chunkSize(size) {
  const wanted = Math.ceil(size / TARGET_CHUNKS / MiB) * MiB;
  return Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, wanted));
}

/** A refusal known before sending: shown as is, never retried. */
class Refused extends Error {}

export class FileUpload extends EventTarget {
  /**
   * @param {File} file
   * @param {{ endpoint: string, info: Info, concurrency?: number, hasToken?: () => boolean }} options
   */
  constructor(file, { endpoint, info, concurrency = 4, hasToken = () => false }) {
    super();
    this.file = file;
    this.endpoint = endpoint; // absolute URL of the tus collection
    this.info = info;
    this.concurrency = concurrency;
    this.hasToken = hasToken;
    this.key = store.fileKey(endpoint, file);
    /** @type {UploadStateName} */
    this.state = UploadState.QUEUED;
    this.message = "";
    this.hashed = 0;
    this.instant = false;
    this.resumed = false;
    this.offline = false;
    /** @type {string | null} */
    this.url = null;
    /** @type {string | null} */
    this.downloadUrl = null;
    /** @type {Chunk[]} */
    this.chunks = [];
    /** @type {Unfinished} */
    this.entry = /** @type {Unfinished} */ (/** @type {unknown} */ (null)); // set by #run
    /** @type {string | null} */
    this.group = null; // names this page load's partials (see #createChunk)
    /** @type {string | null} */
    this.algorithm = null; // the Upload-Checksum algorithm, null when the server offers none
    this.controller = new AbortController();
    /** @type {Promise<void> | null} */
    this.task = null;
  }

  /** Bytes the server holds or is receiving. */
  get uploaded() {
    if (this.state === UploadState.DONE) return this.file.size;
    return this.chunks.reduce((sum, chunk) => sum + chunk.offset + chunk.inflight, 0);
  }

  // -- controls ---------------------------------------------------------------------------

  start() {
    this.task ??= this.#guarded().finally(() => {
      this.task = null;
    });
    return this.task;
  }

  pause() {
    if (!states.canPause(this.state)) return;
    this.#set(UploadState.PAUSED, "Paused.");
    this.controller.abort();
  }

  resume() {
    if (!states.canResume(this.state)) return;
    this.#set(UploadState.QUEUED, "");
    (this.task ?? Promise.resolve()).then(() => this.start());
  }

  retry() {
    this.resume();
  }

  /** Stops and deletes what the server holds of this upload; forgets it. */
  async cancel() {
    if (states.isOver(this.state)) return;
    this.#set(UploadState.CANCELLED, "Cancelled; the server's copy is deleted.");
    this.controller.abort();
    await this.task;
    const urls = this.chunks.map((chunk) => chunk.url).filter((url) => url !== null);
    await Promise.allSettled(urls.map((url) => request("DELETE", url)));
    await store.remove(this.key);
    this.#emit();
  }

  // -- the run ----------------------------------------------------------------------------

  async #guarded() {
    this.controller = new AbortController();
    const signal = this.controller.signal;
    try {
      await this.#run(signal);
    } catch (error) {
      // Paused or cancelled. A real failure is thrown as itself even when it stopped the rest.
      if (retry.isAbort(error)) return;
      this.#set(UploadState.FAILED, error instanceof Error ? error.message : String(error));
    }
  }

  /** @param {AbortSignal} signal */
  async #run(signal) {
    const refused = refusal(this.file, this.info, this.hasToken());
    if (refused) throw new Refused(refused);
    const saved = await store.load(this.key);
    if (saved && !saved.done) {
      this.entry = saved;
      this.resumed = true;
    } else {
      this.#set(UploadState.HASHING, "Hashing the file…");
      const sha256 = await hashFile(this.file, (done) => this.#hashed(done), signal);
      this.entry = this.#newEntry(sha256);
    }
    this.#layOutChunks();
    if (!this.resumed && (await this.#tryInstant(signal))) return;
    await store.save(this.entry);
    this.algorithm = await algorithmFor(this.endpoint, this.info.tus);
    this.#set(UploadState.UPLOADING, this.resumed ? "Continuing where the upload stopped." : "");
    await this.#syncOffsets(signal);
    await this.#sendChunks(signal);
    this.#set(UploadState.FINISHING, "Checking the server's copy…");
    const url = this.entry.single ? this.chunks[0].url : await this.#concatenate(signal);
    await this.#confirm(/** @type {string} */ (url), signal);
  }

  /** @param {string} sha256 @returns {Unfinished} */
  #newEntry(sha256) {
    const { file } = this;
    const size = chunkSize(file.size);
    const count = Math.max(1, Math.ceil(file.size / size));
    return {
      key: this.key,
      name: file.name,
      size: file.size,
      type: file.type,
      lastModified: file.lastModified,
      sha256,
      chunkSize: size,
      single: count === 1, // one plain upload; no concatenation needed
      parts: new Array(count).fill(null),
      checked: true, // nothing stored yet
      createdAt: Date.now(),
      expiresAt: null,
    };
  }

  #layOutChunks() {
    const { chunkSize: size, parts } = this.entry;
    this.chunks = parts.map((url, index) => {
      const start = index * size;
      const end = Math.min(this.file.size, start + size);
      const length = end - start;
      return { index, start, length, url, offset: 0, inflight: 0, state: ChunkState.WAITING, creationKey: null };
    });
    this.#emit();
  }

  /** Declares the digest at creation: the server completes at once when it holds the bytes,
   * or asks for proof (a few ranges hashed with its nonce) when another owner stored them.
   * @param {AbortSignal} signal */
  async #tryInstant(signal) {
    const { file, entry } = this;
    if (!this.info.instant_upload || file.size === 0) return false;
    this.#set(UploadState.CHECKING, "Asking the server whether it has this file already…");
    const created = await request("POST", this.endpoint, {
      headers: {
        "Upload-Length": String(file.size),
        "Upload-Metadata": tus.fileMetadata(file),
        "Repr-Digest": tus.reprDigest(entry.sha256),
      },
      signal,
    });
    const url = tus.locationOf(created, this.endpoint);
    let offset = tus.offsetOf(created);
    const challenge = created.header("Haul-Challenge");
    if (offset !== file.size && challenge) {
      try {
        const proof = await answerChallenge(file, challenge);
        const proved = await request("PATCH", url, {
          headers: { "Upload-Offset": "0", "Content-Type": tus.OCTETS, "Haul-Proof": proof },
          signal,
        });
        offset = tus.offsetOf(proved);
      } catch (error) {
        if (retry.isAbort(error)) throw error;
        offset = 0; // an unanswerable challenge or a refused proof: send the bytes instead
      }
    }
    if (offset === file.size) {
      this.instant = true;
      for (const chunk of this.chunks) {
        chunk.offset = chunk.length;
        chunk.state = ChunkState.STORED;
      }
      await this.#confirm(url, signal);
      return true;
    }
    if (entry.single) {
      entry.parts[0] = this.chunks[0].url = url; // this upload is the one to fill
    } else {
      request("DELETE", url).catch(() => {}); // partial uploads take its place
    }
    return false;
  }

  /** After a reload or an interruption: what the server holds of each chunk.
   * @param {AbortSignal} signal */
  async #syncOffsets(signal) {
    const known = this.chunks.filter((chunk) => chunk.url && !states.isHeld(chunk.state));
    await pool(known, 4, (chunk) => this.#resync(chunk, signal), this.#stopOthers);
  }

  /** @param {Chunk} chunk @param {AbortSignal} signal */
  async #resync(chunk, signal) {
    try {
      const answer = await request("HEAD", /** @type {string} */ (chunk.url), { signal });
      chunk.offset = tus.offsetOf(answer);
      this.#noteExpiry(answer);
    } catch (error) {
      if (!(error instanceof ServerError && [403, 404, 410].includes(error.status))) throw error;
      chunk.url = this.entry.parts[chunk.index] = null; // expired or removed: start it again
      chunk.offset = 0;
    }
    chunk.state = states.chunkStateAt(chunk.offset, chunk.length, this.#checked);
    this.#emit();
  }

  /** @param {AbortSignal} signal */
  async #sendChunks(signal) {
    const pending = this.chunks.filter((chunk) => !states.isHeld(chunk.state));
    const send = (/** @type {Chunk} */ chunk) => this.#sendChunk(chunk, signal);
    await pool(pending, this.concurrency, send, this.#stopOthers);
  }

  /** @param {Chunk} chunk @param {AbortSignal} signal */
  async #sendChunk(chunk, signal) {
    let attempts = 0;
    let resync = false;
    for (;;) {
      try {
        if (!chunk.url) await this.#createChunk(chunk, signal);
        else if (resync) await this.#resync(chunk, signal);
        resync = true;
        while (chunk.offset < chunk.length) await this.#patch(chunk, signal);
        chunk.state = states.storedState(this.#checked);
        this.#emit();
        await store.save(this.entry); // keeps the expiry the server just extended
        return;
      } catch (error) {
        chunk.inflight = 0;
        if (signal.aborted || retry.isAbort(error)) {
          chunk.state = ChunkState.WAITING;
          throw error;
        }
        const offline = error instanceof NetworkError && !navigator.onLine;
        if (!offline) attempts += 1;
        if (!retry.isTransient(error) || attempts >= retry.MAX_ATTEMPTS) {
          chunk.state = ChunkState.FAILED;
          this.#emit();
          throw error;
        }
        chunk.state = ChunkState.WAITING;
        this.#emit();
        if (offline) {
          this.offline = true;
          this.#emit();
          await retry.waitOnline(signal);
          this.offline = false;
        } else {
          await retry.sleep(retry.backoff(attempts, retry.retryAfterOf(error)), signal);
        }
      }
    }
  }

  /** @param {Chunk} chunk @param {AbortSignal} signal */
  async #createChunk(chunk, signal) {
    /** @type {Record<string, string>} */
    const headers = { "Upload-Length": String(chunk.length) };
    if (this.entry.single) {
      headers["Upload-Metadata"] = tus.fileMetadata(this.file);
      headers["Repr-Digest"] = tus.reprDigest(this.entry.sha256);
    } else {
      headers["Upload-Concat"] = "partial";
      this.group ??= tus.randomHex(12);
      headers["Upload-Metadata"] = tus.partMetadata(this.group, chunk.index);
    }
    // Kept across this chunk's retries: a creation whose answer was lost is not made twice.
    chunk.creationKey ??= tus.randomHex(16);
    headers["Idempotency-Key"] = tus.idempotencyKey(chunk.creationKey);
    const created = await request("POST", this.endpoint, { headers, signal });
    chunk.url = tus.locationOf(created, this.endpoint);
    chunk.creationKey = null; // a chunk made again after expiry is a new upload
    chunk.offset = tus.offsetOf(created);
    this.entry.parts[chunk.index] = chunk.url;
    this.#noteExpiry(created);
    await store.save(this.entry);
  }

  /** @param {Chunk} chunk @param {AbortSignal} signal */
  async #patch(chunk, signal) {
    chunk.state = ChunkState.SENDING;
    this.#emit();
    const from = chunk.start + chunk.offset;
    const rest = chunk.length - chunk.offset;
    // Unchecked, a cut-off PATCH keeps what arrived: then one PATCH sends the whole rest.
    const size = this.algorithm ? Math.min(PIECE, rest) : rest;
    const body = this.file.slice(from, from + size);
    /** @type {Record<string, string>} */
    const headers = { "Upload-Offset": String(chunk.offset), "Content-Type": tus.OCTETS };
    if (this.algorithm) {
      const digest = await checksum(body, this.algorithm, signal);
      headers["Upload-Checksum"] = checksumHeader(this.algorithm, digest);
    } else if (this.entry.checked) {
      this.entry.checked = false; // these bytes are stored unchecked
      await store.save(this.entry);
    }
    const answer = await request("PATCH", /** @type {string} */ (chunk.url), {
      headers,
      body,
      onProgress: (loaded) => {
        chunk.inflight = loaded;
        this.#emit();
      },
      signal,
    });
    chunk.inflight = 0;
    chunk.offset = tus.offsetOf(answer, chunk.offset + size);
    this.#noteExpiry(answer);
  }

  /** @param {AbortSignal} signal */
  async #concatenate(signal) {
    const concat = tus.finalConcat(this.chunks.map((chunk) => /** @type {string} */ (chunk.url)));
    for (let attempt = 1; ; attempt += 1) {
      try {
        const created = await request("POST", this.endpoint, {
          headers: {
            "Upload-Concat": concat,
            "Upload-Metadata": tus.fileMetadata(this.file),
            "Repr-Digest": tus.reprDigest(this.entry.sha256),
          },
          stallTimeout: 600_000, // the server hashes the whole file before it answers
          signal,
        });
        return tus.locationOf(created, this.endpoint);
      } catch (error) {
        if (error instanceof ServerError && error.status === 422) {
          await store.remove(this.key); // the file changed: a retry starts over
          throw error;
        }
        if (!retry.isTransient(error) || attempt >= retry.MAX_FINAL_ATTEMPTS) throw error;
        await retry.sleep(retry.backoff(attempt, retry.retryAfterOf(error)), signal);
      }
    }
  }

  /** End to end: the server must hold all the bytes, and report our SHA-256 for them.
   * @param {string} url @param {AbortSignal} signal */
  async #confirm(url, signal) {
    const answer = await request("HEAD", url, { signal });
    const offset = tus.offsetOf(answer);
    if (offset !== this.file.size) {
      throw new Error(`The server holds ${offset} of ${this.file.size} bytes.`);
    }
    const reported = tus.sha256FromReprDigest(answer.header("Repr-Digest"));
    if (reported && reported !== this.entry.sha256) {
      throw new Error("The server's copy has a different SHA-256 than the file.");
    }
    this.url = url;
    // With credentials, a plain link would not open in a browser tab: the server signs one.
    const link = answer.header("Haul-Download-Link");
    this.downloadUrl = link ? new URL(link, this.endpoint).href : url;
    for (const chunk of this.chunks) {
      chunk.state = states.confirmedChunkState(chunk.state, Boolean(reported));
    }
    await store.remove(this.key);
    await store.save({
      key: `done|${url}`,
      done: true,
      url,
      name: this.file.name,
      size: this.file.size,
      sha256: this.entry.sha256,
      instant: this.instant,
      doneAt: Date.now(),
    });
    const how = this.instant ? "The server already had this file: instant upload." : "Uploaded.";
    this.#set(UploadState.DONE, reported ? `${how} SHA-256 verified by the server.` : how);
  }

  // -- helpers ----------------------------------------------------------------------------

  /** Whether what the server holds of this upload was checked as it was stored. */
  get #checked() {
    return this.entry.checked === true;
  }

  /** A chunk failed for real: the others stop too (the failure is what the user sees). */
  #stopOthers = (/** @type {unknown} */ error) => {
    if (!retry.isAbort(error)) this.controller.abort();
  };

  /** The entry lives as long as its longest-lived chunk on the server.
   * @param {Answer} answer */
  #noteExpiry(answer) {
    const expires = tus.expiresOf(answer);
    if (expires !== null) this.entry.expiresAt = Math.max(this.entry.expiresAt ?? 0, expires);
  }

  /** @param {number} done */
  #hashed(done) {
    this.hashed = done;
    this.#emit();
  }

  /** @param {UploadStateName} state */
  #set(state, message = this.message) {
    this.state = state;
    this.message = message;
    this.#emit();
  }

  #emit() {
    this.dispatchEvent(new Event("change"));
  }
}
