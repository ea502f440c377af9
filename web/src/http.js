// @ts-check
// One HTTP request to a tus server, with upload progress, a stall timer and clear errors.
// XMLHttpRequest rather than fetch: only it reports upload progress for a streamed Blob body.
import { NetworkError, ServerError } from "./errors.js";
import { retryAfterSeconds } from "./retry.js";
import { TUS_VERSION } from "./tus.js";

/** @typedef {import("./tus.js").Answer} Answer */

/**
 * @typedef {object} RequestOptions
 * @property {Record<string, string>} [headers]
 * @property {Blob | null} [body]
 * @property {(loaded: number) => void} [onProgress] bytes of the body sent so far
 * @property {number} [stallTimeout] ms without progress before the request is given up
 * @property {AbortSignal} [signal]
 */

/** @type {Set<(reason: Error) => void>} */
const inFlight = new Set();
/** @type {string | null} */
let credentials = null;

/** The API key or token sent as `Authorization: Bearer ...` with every request (null: none).
 * @param {string | null} token */
export function setToken(token) {
  credentials = token || null;
}

/** Ends every running request at once (the browser went offline: don't wait for stalls).
 * @param {Error} reason */
export function abortAll(reason) {
  for (const stop of inFlight) stop(reason);
}

/** @type {Record<number, string>} */
const GENERIC = {
  400: "The server could not understand the request.",
  401: "The server wants you to sign in first.",
  403: "The server does not allow this upload.",
  404: "The upload is not on the server (any more).",
  410: "The upload is gone from the server (it expired or was deleted).",
  413: "The file is larger than the server accepts.",
  415: "The server does not accept this kind of file.",
  422: "The server's copy differs from the file.",
  429: "The server is busy; trying again shortly.",
  507: "The server is out of storage space.",
};

/** @param {XMLHttpRequest} xhr */
function serverError(xhr) {
  const text = (xhr.responseText || "").trim();
  const match = /^(ERR_[A-Z0-9_]+):\s*(.+)$/s.exec(text);
  const fallback = GENERIC[xhr.status] ?? `The server answered ${xhr.status} ${xhr.statusText}.`;
  let message = match ? match[2] : fallback;
  message = message.charAt(0).toUpperCase() + message.slice(1);
  if (!/[.!?]$/.test(message)) message += ".";
  const retryAfter = retryAfterSeconds(xhr.getResponseHeader("Retry-After"));
  return new ServerError(xhr.status, match?.[1] ?? null, message, retryAfter);
}

/**
 * Sends one request; resolves with {status, header(name)} for a 2xx answer, rejects with
 * ServerError, NetworkError, or an AbortError DOMException when `signal` aborts.
 * @param {string} method
 * @param {string} url
 * @param {RequestOptions} [options]
 * @returns {Promise<Answer>}
 */
export function request(method, url, options = {}) {
  const { headers = {}, body = null, onProgress, stallTimeout = 30_000, signal } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException("stopped", "AbortError"));
      return;
    }
    const xhr = new XMLHttpRequest();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let stalled;
    /** @type {Error | null} */
    let failure = null;
    const stop = (/** @type {Error} */ reason) => {
      failure = reason;
      xhr.abort();
    };
    const onAbort = () => stop(new DOMException("stopped", "AbortError"));
    const cleanup = () => {
      clearTimeout(stalled);
      inFlight.delete(stop);
      signal?.removeEventListener("abort", onAbort);
    };
    const alive = () => {
      clearTimeout(stalled);
      stalled = setTimeout(() => stop(new NetworkError("no progress for a while")), stallTimeout);
    };
    xhr.open(method, url);
    xhr.setRequestHeader("Tus-Resumable", TUS_VERSION);
    if (credentials) xhr.setRequestHeader("Authorization", `Bearer ${credentials}`);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      alive();
      onProgress?.(event.loaded);
    };
    xhr.onprogress = alive;
    xhr.onload = () => {
      cleanup();
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ status: xhr.status, header: (name) => xhr.getResponseHeader(name) });
      } else {
        reject(serverError(xhr));
      }
    };
    xhr.onerror = () => {
      cleanup();
      reject(new NetworkError("the connection to the server failed"));
    };
    xhr.onabort = () => {
      cleanup();
      reject(failure ?? new NetworkError("the request was cut off"));
    };
    inFlight.add(stop);
    signal?.addEventListener("abort", onAbort, { once: true });
    alive();
    xhr.send(body);
  });
}
