// @ts-check
// One file's upload: hash it (in a worker), try an instant upload, otherwise send its chunks
// as parallel tus partial uploads joined by a final concatenation that declares the file's
// SHA-256, which the server checks before it calls the upload complete. The final upload is
// created before any chunk's bytes are sent, its chunks a multiple of 8 MiB long: an S3 store
// then writes them straight into the final object (no second copy). When the server offers no
// instant upload the file is hashed while its chunks travel, and the digest is declared to the
// final upload once known (an empty PATCH with Repr-Digest).
//
// Each PATCH also carries `Upload-Checksum` (the cheapest algorithm the server offers, computed
// in the worker), so a piece damaged on the way is refused (460) and only it is sent again. The
// server keeps all of a checksummed PATCH or none of it, so PATCHes are at most 4 MiB (less
// after a failure, see retry.nextPiece): a request cut off costs at most that much again.
import { algorithmFor, checksumHeader } from "./checksum.js";
import { NetworkError, ServerError } from "./errors.js";
import * as finals from "./finals.js";
import { checksum, hashFile } from "./hasher.js";
import { request } from "./http.js";
import * as instant from "./instant.js";
import { refusal } from "./limits.js";
import { pool } from "./pool.js";
import * as retry from "./retry.js";
import { ChunkState, UploadState } from "./states.js";
import * as states from "./states.js";
import * as store from "./store.js";
import * as tus from "./tus.js";
import { reportedDigest } from "./verifying.js";

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
 * @property {number} piece the most its next checksummed PATCH carries
 */

const MiB = 1 << 20;
const UNIT = 8 * MiB; // chunks are a multiple of this (S3 parts of the final object)
const MIN_CHUNK = UNIT;
const MAX_CHUNK = 8 * UNIT;
const TARGET_CHUNKS = 1000; // keeps the final request's header list short

/** At most about TARGET_CHUNKS chunks, each a multiple of 8 MiB within [8 MiB, 64 MiB].
 * @param {number} size */
export function chunkSize(size) {
  const wanted = Math.ceil(size / TARGET_CHUNKS / UNIT) * UNIT;
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
    const urls = [...this.chunks.map((c) => c.url), this.entry?.final ?? null].filter((u) => u !== null);
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
    } else if (this.info.instant_upload || this.file.size <= chunkSize(this.file.size)) {
      // The digest first: it asks for an instant upload, or goes with the single upload.
      this.#set(UploadState.HASHING, "Hashing the file…");
      const sha256 = await hashFile(this.file, (done) => this.#hashed(done), signal);
      this.entry = this.#newEntry(sha256);
    } else {
      this.entry = this.#newEntry(null);
    }
    const hashing = this.entry.sha256 === null ? this.#hashAlongside(signal) : null;
    this.#layOutChunks();
    if (!this.resumed && (await this.#tryInstant(signal))) return;
    await store.save(this.entry);
    this.algorithm = await algorithmFor(this.endpoint, this.info.tus);
    this.#set(UploadState.UPLOADING, this.resumed ? "Continuing where the upload stopped." : "");
    await this.#syncOffsets(signal);
    if (this.entry.single) {
      await this.#sendChunks(signal);
      this.#set(UploadState.FINISHING, "Checking the server's copy…");
      await this.#confirm(/** @type {string} */ (this.chunks[0].url), signal);
      return;
    }
    // Every partial, then the final upload, and only then the bytes.
    await this.#sendChunks(signal, true);
    let final = await this.#concatenate(signal);
    const declared = hashing?.then((sha256) => this.#declare(final, sha256, signal)) ?? null;
    declared?.catch(() => {}); // awaited below; a failure before then is not left unheard
    await this.#sendChunks(signal);
    if (this.#joined !== this.#finalOf()) final = await this.#concatenate(signal); // a chunk expired
    this.#set(UploadState.FINISHING, "Checking the server's copy…");
    await declared;
    const digest = hashing ? await hashing : this.entry.sha256;
    if (digest && this.#declaredTo !== final) await this.#declare(final, digest, signal);
    await this.#confirm(final, signal);
  }

  /** The file's SHA-256, computed while its chunks travel, kept with the entry once known.
   * @param {AbortSignal} signal */
  #hashAlongside(signal) {
    const kept = hashFile(this.file, (done) => this.#hashed(done), signal).then(async (sha256) => {
      await store.save(Object.assign(this.entry, { sha256 }));
      return sha256;
    });
    kept.catch(() => {}); // awaited where the digest is needed
    return kept;
  }

  /** @param {string | null} sha256 null: not known yet @returns {Unfinished} */
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
      const state = ChunkState.WAITING;
      return { index, start, length, url, offset: 0, inflight: 0, state, creationKey: null, piece: retry.MAX_PIECE };
    });
    this.#emit();
  }

  /** An instant upload, when the server holds the file already (see instant.js).
   * @param {AbortSignal} signal */
  async #tryInstant(signal) {
    const { file, entry } = this;
    if (!this.info.instant_upload || file.size === 0 || entry.sha256 === null) return false;
    this.#set(UploadState.CHECKING, "Asking the server whether it has this file already…");
    const { url, offset } = await instant.ask(this.endpoint, file, entry.sha256, signal);
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

  /** Sends what the server lacks of each chunk; with `createOnly`, only creates the chunks'
   * partial uploads.
   * @param {AbortSignal} signal @param {boolean} [createOnly] */
  async #sendChunks(signal, createOnly = false) {
    const pending = this.chunks.filter((chunk) => !states.isHeld(chunk.state));
    const send = (/** @type {Chunk} */ chunk) => this.#sendChunk(chunk, signal, createOnly);
    await pool(pending, this.concurrency, send, this.#stopOthers);
  }

  /** @param {Chunk} chunk @param {AbortSignal} signal @param {boolean} createOnly */
  async #sendChunk(chunk, signal, createOnly) {
    const attempts = new retry.Attempts();
    let resync = false;
    for (;;) {
      try {
        if (!chunk.url) await this.#createChunk(chunk, signal);
        else if (resync) await this.#resync(chunk, signal);
        resync = true;
        if (createOnly) return;
        while (chunk.offset < chunk.length) await this.#patch(chunk, signal);
        chunk.state = states.storedState(this.#checked);
        this.#emit();
        await store.save(this.entry); // keeps the expiry the server just extended
        return;
      } catch (error) {
        chunk.inflight = 0;
        if (error instanceof NetworkError) chunk.piece = retry.nextPiece(chunk.piece, false);
        if (signal.aborted || retry.isAbort(error)) {
          chunk.state = ChunkState.WAITING;
          throw error;
        }
        const offline = error instanceof NetworkError && !navigator.onLine;
        attempts.failed(chunk.offset, !offline);
        if (!retry.isTransient(error) || attempts.count >= retry.MAX_ATTEMPTS) {
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
          await retry.sleep(retry.backoff(attempts.count, retry.retryAfterOf(error)), signal);
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
      if (this.entry.sha256) headers["Repr-Digest"] = tus.reprDigest(this.entry.sha256);
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
    const size = this.algorithm ? Math.min(chunk.piece, rest) : rest;
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
    chunk.piece = retry.nextPiece(chunk.piece, true);
    chunk.offset = tus.offsetOf(answer, chunk.offset + size);
    this.#noteExpiry(answer);
  }

  /** The final upload joining the chunks, with the file's digest when it is known.
   * @param {AbortSignal} signal */
  async #concatenate(signal) {
    const concat = this.#finalOf();
    const { sha256 } = this.entry;
    const url = await this.#unlessChanged(finals.create(this.endpoint, this.file, concat, sha256, signal));
    this.#joined = concat;
    // A final made before (resumed) is answered as it is: it may not have the digest yet.
    if (sha256 && !this.resumed) this.#declaredTo = url;
    this.entry.final = url; // deleted with the chunks when the upload is cancelled
    await store.save(this.entry);
    return url;
  }

  /** @param {string} url @param {string} sha256 @param {AbortSignal} signal */
  async #declare(url, sha256, signal) {
    await this.#unlessChanged(finals.declare(url, sha256, signal));
    this.#declaredTo = url;
  }

  /** A 422 means the file's bytes are not what the server holds: a retry starts over.
   * @template T @param {Promise<T>} work */
  async #unlessChanged(work) {
    try {
      return await work;
    } catch (error) {
      if (error instanceof ServerError && error.status === 422) await store.remove(this.key);
      throw error;
    }
  }

  /** End to end: the server must hold all the bytes, and report our SHA-256 for them.
   * @param {string} url @param {AbortSignal} signal */
  async #confirm(url, signal) {
    // A final upload is assembled before HEAD answers; its digest may be checked later.
    const answer = await this.#unlessChanged(request("HEAD", url, { stallTimeout: 600_000, signal }));
    const offset = tus.offsetOf(answer);
    if (offset !== this.file.size) throw new Error(`The server holds ${offset} of ${this.file.size} bytes.`);
    const reported = await reportedDigest(answer, url, signal);
    if (reported && reported !== this.entry.sha256) {
      throw new Error("The server's copy has a different SHA-256 than the file.");
    }
    this.url = url;
    // With credentials, a plain link would not open in a browser tab: the server signs one.
    const link = answer.header("Haul-Download-Link");
    this.downloadUrl = link ? new URL(link, this.endpoint).href : url;
    for (const chunk of this.chunks) chunk.state = states.confirmedChunkState(chunk.state, Boolean(reported));
    await store.remove(this.key);
    await store.save({
      key: `done|${url}`,
      done: true,
      url,
      name: this.file.name,
      size: this.file.size,
      sha256: /** @type {string} */ (this.entry.sha256),
      instant: this.instant,
      doneAt: Date.now(),
    });
    const how = this.instant ? "The server already had this file: instant upload." : "Uploaded.";
    this.#set(UploadState.DONE, reported ? `${how} SHA-256 verified by the server.` : how);
  }

  // -- helpers ----------------------------------------------------------------------------

  /** The Upload-Concat of the final upload these chunks make. */
  #finalOf() {
    return tus.finalConcat(this.chunks.map((chunk) => /** @type {string} */ (chunk.url)));
  }

  #joined = ""; // the Upload-Concat of the final upload made last
  #declaredTo = ""; // the final upload told the digest last

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
