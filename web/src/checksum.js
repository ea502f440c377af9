// @ts-check
// Which tus checksum the page puts on each request's bytes (`Upload-Checksum`), so a chunk
// damaged on the way is refused by the server (460) and sent again, alone.
import { request } from "./http.js";

/** The algorithms the worker computes, cheapest first (they guard the transfer; the file's
 * identity is its SHA-256, declared apart). */
export const CHEAPEST_FIRST = Object.freeze(["crc32", "md5", "sha1", "sha256", "sha512"]);

/**
 * The cheapest algorithm both sides know; null when the server offers none.
 * @param {string | null} extensions `Tus-Extension`
 * @param {string | null} algorithms `Tus-Checksum-Algorithm`
 * @returns {string | null}
 */
export function cheapest(extensions, algorithms) {
  const split = (/** @type {string | null} */ value) =>
    (value ?? "").split(",").map((item) => item.trim().toLowerCase());
  if (!split(extensions).includes("checksum")) return null;
  const offered = split(algorithms);
  return CHEAPEST_FIRST.find((name) => offered.includes(name)) ?? null;
}

/**
 * `Upload-Checksum: <algorithm> <base64 digest>`.
 * @param {string} algorithm
 * @param {Uint8Array} digest
 */
export const checksumHeader = (algorithm, digest) =>
  `${algorithm} ${btoa(String.fromCharCode(...digest))}`;

/** @type {Map<string, Promise<string | null>>} */
const asked = new Map();

/**
 * The algorithm to use with this tus endpoint, from its OPTIONS answer (asked once per page
 * load, for every upload). When the question fails, `fallback` (the server's /api/info) answers.
 * @param {string} endpoint
 * @param {{ extensions?: string[], checksum_algorithms?: string[] } | undefined} fallback
 * @returns {Promise<string | null>}
 */
export function algorithmFor(endpoint, fallback) {
  let answer = asked.get(endpoint);
  if (!answer) {
    answer = request("OPTIONS", endpoint).then(
      (options) => cheapest(options.header("Tus-Extension"), options.header("Tus-Checksum-Algorithm")),
      () => {
        asked.delete(endpoint); // asked again by the next upload
        const join = (/** @type {string[] | undefined} */ list) => (list ?? []).join(",");
        return cheapest(join(fallback?.extensions), join(fallback?.checksum_algorithms));
      },
    );
    asked.set(endpoint, answer);
  }
  return answer;
}
