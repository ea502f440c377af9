// @ts-check
// When a failed request is worth sending again, and how long to wait before it.
import { NetworkError, ServerError } from "./errors.js";

export const MAX_ATTEMPTS = 8; // per chunk; waiting while offline does not count
export const MAX_FINAL_ATTEMPTS = 3; // the final concatenation: the server hashes the whole file
const MAX_DELAY = 30_000; // ms
const KiB = 1024;
export const MAX_PIECE = 4096 * KiB; // the most one checksummed PATCH carries
const MIN_PIECE = 256 * KiB;

/** Conflicts, locks, overload, 5xx: worth trying again (after re-reading the offset).
 * @param {number} status */
export const transientStatus = (status) => [409, 423, 429, 460].includes(status) || status >= 500;

/** @param {unknown} error */
export const isTransient = (error) =>
  error instanceof NetworkError || (error instanceof ServerError && transientStatus(error.status));

/** Paused or cancelled (an AbortError), as opposed to a failure.
 * @param {unknown} error */
export const isAbort = (error) =>
  typeof error === "object" && error !== null && "name" in error && error.name === "AbortError";

/** The server's Retry-After for this failure, in seconds, if it gave one.
 * @param {unknown} error */
export const retryAfterOf = (error) => (error instanceof ServerError ? error.retryAfter : null);

/**
 * Seconds to wait from a `Retry-After` header given in seconds; null when absent, zero or not
 * a number (an HTTP date is ignored: the backoff alone decides then).
 * @param {string | null} value
 */
export const retryAfterSeconds = (value) => Number(value) || null;

/**
 * Milliseconds before attempt `attempt` + 1: exponential with jitter (half fixed, half random),
 * capped at 30 s, but never shorter than the server's Retry-After.
 * @param {number} attempt the attempts made so far (1 after the first failure)
 * @param {number | null | undefined} retryAfter seconds, from the server
 * @param {() => number} random a number in [0, 1)
 */
export function backoff(attempt, retryAfter, random = Math.random) {
  const base = Math.min(MAX_DELAY, 500 * 2 ** attempt);
  return Math.max(retryAfter ? retryAfter * 1000 : 0, base / 2 + random() * (base / 2));
}

/** The failures in a row of one chunk. Only those count: a failure after the chunk moved on
 * is the first again (as in tus-js-client), or a long chunk on a bumpy line runs out of tries. */
export class Attempts {
  count = 0;
  #offset = -1;

  /** @param {number} offset where the chunk stood when it failed @param {boolean} counted
   * false while offline: waiting for the network is not a try */
  failed(offset, counted = true) {
    if (offset > this.#offset) this.count = 0;
    this.#offset = offset;
    if (counted) this.count += 1;
  }
}

/** The most a chunk's next checksummed PATCH carries: halved after a request was cut off, since
 * on a line that cuts requests a smaller all-or-nothing piece still gets through; doubled after
 * a success.
 * @param {number} piece @param {boolean} succeeded */
export const nextPiece = (piece, succeeded) =>
  succeeded ? Math.min(MAX_PIECE, piece * 2) : Math.max(MIN_PIECE, piece / 2);

const stopped = () => new DOMException("stopped", "AbortError");

/**
 * Resolves after `ms`, or rejects with an AbortError when `signal` aborts first.
 * @param {number} ms
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(stopped());
      },
      { once: true },
    );
  });
}

/**
 * Resolves when the browser is back online, or rejects with an AbortError when `signal` aborts.
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
export function waitOnline(signal) {
  return new Promise((resolve, reject) => {
    const done = () => {
      window.removeEventListener("online", done);
      if (signal.aborted) reject(stopped());
      else resolve();
    };
    window.addEventListener("online", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
