// One file's upload: hash it (in a worker), try an instant upload, otherwise send its chunks
// as parallel tus partial uploads and join them with a final concatenation that declares the
// file's SHA-256, which the server checks before it calls the upload complete.
//
// Chunks carry no per-request checksum on purpose: the whole-file digest catches corruption,
// and a chunk cut off halfway keeps what the server received, so a resume sends only the rest.
import { abortAll, NetworkError, request, ServerError } from "./http.js";
import { answerChallenge, hashFile, reprDigest, sha256FromReprDigest } from "./hasher.js";
import { refusal } from "./limits.js";
import * as store from "./store.js";

const MiB = 1 << 20;
const MIN_CHUNK = 8 * MiB;
const MAX_CHUNK = 64 * MiB;
const TARGET_CHUNKS = 1000; // keeps the final request's header list short
const MAX_ATTEMPTS = 8; // per chunk; waiting while offline does not count
const OCTETS = "application/offset+octet-stream";

/** About TARGET_CHUNKS chunks, each a whole number of MiB within [8 MiB, 64 MiB]. */
export function chunkSize(size) {
  const wanted = Math.ceil(size / TARGET_CHUNKS / MiB) * MiB;
  return Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, wanted));
}

/** A refusal known before sending: shown as is, never retried. */
class Refused extends Error {}

const transient = (error) =>
  error instanceof NetworkError || (error instanceof ServerError && error.transient);

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new DOMException("stopped", "AbortError"));
      },
      { once: true },
    );
  });
}

function waitOnline(signal) {
  return new Promise((resolve, reject) => {
    const done = () => {
      window.removeEventListener("online", done);
      if (signal.aborted) reject(new DOMException("stopped", "AbortError"));
      else resolve();
    };
    window.addEventListener("online", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

function backoff(attempt, retryAfter) {
  const base = Math.min(30_000, 500 * 2 ** attempt);
  return Math.max(retryAfter ? retryAfter * 1000 : 0, base / 2 + Math.random() * (base / 2));
}

function encodeMetadata(pairs) {
  const encode = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
  return pairs.map(([key, value]) => `${key} ${encode(value)}`).join(",");
}

function metadata(file) {
  const pairs = [["filename", file.name]];
  if (file.type) pairs.push(["filetype", file.type]);
  return encodeMetadata(pairs);
}

/** A random name for this page's set of partials (getRandomValues works on plain http too). */
function randomHex(size) {
  const bytes = crypto.getRandomValues(new Uint8Array(size));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class FileUpload extends EventTarget {
  constructor(file, { endpoint, info, concurrency = 4, hasToken = () => false }) {
    super();
    this.file = file;
    this.endpoint = endpoint; // absolute URL of the tus collection
    this.info = info;
    this.concurrency = concurrency;
    this.hasToken = hasToken;
    this.key = store.fileKey(endpoint, file);
    this.state = "queued"; // hashing checking uploading finishing done paused failed cancelled
    this.message = "";
    this.hashed = 0;
    this.instant = false;
    this.resumed = false;
    this.offline = false;
    this.url = null;
    this.downloadUrl = null;
    this.chunks = [];
    this.entry = null;
    this.group = null; // names this page load's partials (see #createChunk)
    this.controller = null;
    this.task = null;
  }

  /** Bytes the server holds or is receiving. */
  get uploaded() {
    if (this.state === "done") return this.file.size;
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
    if (!["queued", "hashing", "checking", "uploading"].includes(this.state)) return;
    this.#set("paused", "Paused.");
    this.controller?.abort();
  }

  resume() {
    if (!["paused", "failed"].includes(this.state)) return;
    this.#set("queued", "");
    (this.task ?? Promise.resolve()).then(() => this.start());
  }

  retry() {
    this.resume();
  }

  /** Stops and deletes what the server holds of this upload; forgets it. */
  async cancel() {
    if (["done", "cancelled"].includes(this.state)) return;
    this.#set("cancelled", "Cancelled; the server's copy is deleted.");
    this.controller?.abort();
    await this.task;
    const urls = this.chunks.map((chunk) => chunk.url).filter(Boolean);
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
      if (error?.name === "AbortError") return;
      this.#set("failed", error instanceof Error ? error.message : String(error));
    }
  }

  async #run(signal) {
    const refused = refusal(this.file, this.info, this.hasToken());
    if (refused) throw new Refused(refused);
    const saved = await store.load(this.key);
    if (saved) {
      this.entry = saved;
      this.resumed = true;
    } else {
      this.#set("hashing", "Hashing the file…");
      const sha256 = await hashFile(this.file, (done) => this.#progress("hashed", done), signal);
      this.entry = this.#newEntry(sha256);
    }
    this.#layOutChunks();
    if (!this.resumed && (await this.#tryInstant(signal))) return;
    await store.save(this.entry);
    this.#set("uploading", this.resumed ? "Continuing where the upload stopped." : "");
    await this.#syncOffsets(signal);
    await this.#sendChunks(signal);
    this.#set("finishing", "Checking the server's copy…");
    const url = this.entry.single ? this.chunks[0].url : await this.#concatenate(signal);
    await this.#confirm(url, signal);
  }

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
      createdAt: Date.now(),
      expiresAt: null,
    };
  }

  #layOutChunks() {
    const { chunkSize: size, parts } = this.entry;
    this.chunks = parts.map((url, index) => {
      const start = index * size;
      const end = Math.min(this.file.size, start + size);
      return { index, start, length: end - start, url, offset: 0, inflight: 0, state: "waiting", creationKey: null };
    });
    this.#emit();
  }

  /** Declares the digest at creation: the server completes at once when it holds the bytes,
   * or asks for proof (a few ranges hashed with its nonce) when another owner stored them. */
  async #tryInstant(signal) {
    const { file, entry } = this;
    if (!this.info.instant_upload || file.size === 0) return false;
    this.#set("checking", "Asking the server whether it has this file already…");
    const created = await request("POST", this.endpoint, {
      headers: {
        "Upload-Length": String(file.size),
        "Upload-Metadata": metadata(file),
        "Repr-Digest": reprDigest(entry.sha256),
      },
      signal,
    });
    const url = new URL(created.header("Location"), this.endpoint).href;
    let offset = Number(created.header("Upload-Offset") ?? 0);
    const challenge = created.header("Haul-Challenge");
    if (offset !== file.size && challenge) {
      try {
        const proof = await answerChallenge(file, challenge);
        const proved = await request("PATCH", url, {
          headers: { "Upload-Offset": "0", "Content-Type": OCTETS, "Haul-Proof": proof },
          signal,
        });
        offset = Number(proved.header("Upload-Offset") ?? 0);
      } catch (error) {
        if (error?.name === "AbortError") throw error;
        offset = 0; // an unanswerable challenge or a refused proof: send the bytes instead
      }
    }
    if (offset === file.size) {
      this.instant = true;
      for (const chunk of this.chunks) {
        chunk.offset = chunk.length;
        chunk.state = "stored";
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

  /** After a reload or an interruption: what the server holds of each chunk. */
  async #syncOffsets(signal) {
    const known = this.chunks.filter((chunk) => chunk.url && chunk.state !== "stored");
    await this.#pool(known, 4, (chunk) => this.#resync(chunk, signal));
  }

  async #resync(chunk, signal) {
    try {
      const answer = await request("HEAD", chunk.url, { signal });
      chunk.offset = Number(answer.header("Upload-Offset") ?? 0);
      this.#noteExpiry(answer);
    } catch (error) {
      if (!(error instanceof ServerError && [403, 404, 410].includes(error.status))) throw error;
      chunk.url = this.entry.parts[chunk.index] = null; // expired or removed: start it again
      chunk.offset = 0;
    }
    chunk.state = chunk.offset === chunk.length ? "stored" : "waiting";
    this.#emit();
  }

  async #sendChunks(signal) {
    const pending = this.chunks.filter((chunk) => chunk.state !== "stored");
    await this.#pool(pending, this.concurrency, (chunk) => this.#sendChunk(chunk, signal));
  }

  async #sendChunk(chunk, signal) {
    let attempts = 0;
    let resync = false;
    for (;;) {
      try {
        if (!chunk.url) await this.#createChunk(chunk, signal);
        else if (resync) await this.#resync(chunk, signal);
        resync = true;
        while (chunk.offset < chunk.length) await this.#patch(chunk, signal);
        chunk.state = "stored";
        this.#emit();
        await store.save(this.entry); // keeps the expiry the server just extended
        return;
      } catch (error) {
        chunk.inflight = 0;
        if (signal.aborted || error?.name === "AbortError") {
          chunk.state = "waiting";
          throw error;
        }
        const offline = error instanceof NetworkError && !navigator.onLine;
        if (!offline) attempts += 1;
        if (!transient(error) || attempts >= MAX_ATTEMPTS) {
          chunk.state = "failed";
          this.#emit();
          throw error;
        }
        chunk.state = "waiting";
        this.#emit();
        if (offline) {
          this.offline = true;
          this.#emit();
          await waitOnline(signal);
          this.offline = false;
        } else {
          await sleep(backoff(attempts, error.retryAfter), signal);
        }
      }
    }
  }

  async #createChunk(chunk, signal) {
    const headers = { "Upload-Length": String(chunk.length) };
    if (this.entry.single) {
      headers["Upload-Metadata"] = metadata(this.file);
      headers["Repr-Digest"] = reprDigest(this.entry.sha256);
    } else {
      headers["Upload-Concat"] = "partial";
      // Where the chunk belongs, so the server can hash the file while the chunks arrive.
      this.group ??= randomHex(12);
      headers["Upload-Metadata"] = encodeMetadata([["haul-part", `${this.group} ${chunk.index}`]]);
    }
    // Kept across this chunk's retries: a creation whose answer was lost is not made twice.
    chunk.creationKey ??= randomHex(16);
    headers["Idempotency-Key"] = `"${chunk.creationKey}"`;
    const created = await request("POST", this.endpoint, { headers, signal });
    chunk.url = new URL(created.header("Location"), this.endpoint).href;
    chunk.creationKey = null; // a chunk made again after expiry is a new upload
    chunk.offset = Number(created.header("Upload-Offset") ?? 0);
    this.entry.parts[chunk.index] = chunk.url;
    this.#noteExpiry(created);
    await store.save(this.entry);
  }

  async #patch(chunk, signal) {
    chunk.state = "sending";
    this.#emit();
    const from = chunk.start + chunk.offset;
    const answer = await request("PATCH", chunk.url, {
      headers: { "Upload-Offset": String(chunk.offset), "Content-Type": OCTETS },
      body: this.file.slice(from, chunk.start + chunk.length),
      onProgress: (loaded) => {
        chunk.inflight = loaded;
        this.#emit();
      },
      signal,
    });
    chunk.inflight = 0;
    chunk.offset = Number(answer.header("Upload-Offset") ?? chunk.length);
    this.#noteExpiry(answer);
  }

  async #concatenate(signal) {
    const paths = this.chunks.map((chunk) => new URL(chunk.url).pathname).join(" ");
    for (let attempt = 1; ; attempt += 1) {
      try {
        const created = await request("POST", this.endpoint, {
          headers: {
            "Upload-Concat": `final;${paths}`,
            "Upload-Metadata": metadata(this.file),
            "Repr-Digest": reprDigest(this.entry.sha256),
          },
          stallTimeout: 600_000, // the server hashes the whole file before it answers
          signal,
        });
        return new URL(created.header("Location"), this.endpoint).href;
      } catch (error) {
        if (error instanceof ServerError && error.status === 422) {
          await store.remove(this.key); // the file changed: a retry starts over
          throw error;
        }
        if (!transient(error) || attempt >= 3) throw error;
        await sleep(backoff(attempt, error.retryAfter), signal);
      }
    }
  }

  /** End to end: the server must hold all the bytes, and report our SHA-256 for them. */
  async #confirm(url, signal) {
    const answer = await request("HEAD", url, { signal });
    const offset = Number(answer.header("Upload-Offset"));
    if (offset !== this.file.size) {
      throw new Error(`The server holds ${offset} of ${this.file.size} bytes.`);
    }
    const reported = sha256FromReprDigest(answer.header("Repr-Digest"));
    if (reported && reported !== this.entry.sha256) {
      throw new Error("The server's copy has a different SHA-256 than the file.");
    }
    this.url = url;
    // With credentials, a plain link would not open in a browser tab: the server signs one.
    const link = answer.header("Haul-Download-Link");
    this.downloadUrl = link ? new URL(link, this.endpoint).href : url;
    for (const chunk of this.chunks) chunk.state = reported ? "verified" : "stored";
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
    this.#set("done", reported ? `${how} SHA-256 verified by the server.` : how);
  }

  // -- helpers ----------------------------------------------------------------------------

  async #pool(items, width, work) {
    const queue = [...items];
    let failure = null;
    const worker = async () => {
      while (queue.length && !failure) {
        try {
          await work(queue.shift());
        } catch (error) {
          failure ??= error;
          if (error?.name !== "AbortError") this.controller.abort(); // stop the others
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
    if (failure) throw failure;
  }

  /** The entry lives as long as its longest-lived chunk on the server. */
  #noteExpiry(answer) {
    const expires = Date.parse(answer.header("Upload-Expires") ?? "");
    if (Number.isFinite(expires)) this.entry.expiresAt = Math.max(this.entry.expiresAt ?? 0, expires);
  }

  #progress(field, value) {
    this[field] = value;
    this.#emit();
  }

  #set(state, message = this.message) {
    this.state = state;
    this.message = message;
    this.#emit();
  }

  #emit() {
    this.dispatchEvent(new Event("change"));
  }
}

export { abortAll };
