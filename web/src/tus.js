// @ts-check
// The tus 1.0.0 wire format as the page speaks it: the headers it sends (metadata, digests,
// concatenation, idempotency keys) and what it reads from the server's answers.

export const TUS_VERSION = "1.0.0";
export const OCTETS = "application/offset+octet-stream";

/** @typedef {{ status: number, header: (name: string) => string | null }} Answer */

/** @param {Uint8Array} bytes */
const base64 = (bytes) => btoa(String.fromCharCode(...bytes));

/**
 * `Upload-Metadata`: comma-separated `key base64(UTF-8 value)` pairs.
 * @param {[string, string][]} pairs
 */
export function encodeMetadata(pairs) {
  const encode = (/** @type {string} */ text) => base64(new TextEncoder().encode(text));
  return pairs.map(([key, value]) => `${key} ${encode(value)}`).join(",");
}

/**
 * A file's name and, when the browser knows it, its type.
 * @param {{ name: string, type: string }} file
 */
export function fileMetadata(file) {
  /** @type {[string, string][]} */
  const pairs = [["filename", file.name]];
  if (file.type) pairs.push(["filetype", file.type]);
  return encodeMetadata(pairs);
}

/**
 * Where a partial upload belongs (`group index`), so the server can hash the file while the
 * chunks arrive.
 * @param {string} group
 * @param {number} index
 */
export const partMetadata = (group, index) => encodeMetadata([["haul-part", `${group} ${index}`]]);

/**
 * `Upload-Concat` of the final upload that joins these partial uploads, in order.
 * @param {string[]} urls
 */
export const finalConcat = (urls) => `final;${urls.map((url) => new URL(url).pathname).join(" ")}`;

/** `Idempotency-Key` (a quoted string, as the draft standard has it).
 * @param {string} key */
export const idempotencyKey = (key) => `"${key}"`;

/**
 * `Repr-Digest` value (RFC 9530) for a hex SHA-256.
 * @param {string} hex
 */
export function reprDigest(hex) {
  const bytes = (hex.match(/../g) ?? []).map((pair) => parseInt(pair, 16));
  return `sha-256=:${base64(Uint8Array.from(bytes))}:`;
}

/**
 * The hex SHA-256 in a `Repr-Digest` header, or null.
 * @param {string | null | undefined} value
 */
export function sha256FromReprDigest(value) {
  const match = /sha-256=:([A-Za-z0-9+/=]+):/.exec(value ?? "");
  if (!match) return null;
  return Array.from(atob(match[1]), (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
}

/**
 * `Upload-Offset` of an answer, or `otherwise` when it has none.
 * @param {Answer} answer
 * @param {number} [otherwise]
 */
export const offsetOf = (answer, otherwise = 0) => Number(answer.header("Upload-Offset") ?? otherwise);

/**
 * The absolute URL of the upload a creation made (`Location`, relative to the endpoint).
 * @param {Answer} answer
 * @param {string} endpoint
 */
export const locationOf = (answer, endpoint) =>
  new URL(answer.header("Location") ?? "", endpoint).href;

/**
 * `Upload-Expires` in milliseconds since the epoch, or null when absent or unreadable.
 * @param {Answer} answer
 */
export function expiresOf(answer) {
  const expires = Date.parse(answer.header("Upload-Expires") ?? "");
  return Number.isFinite(expires) ? expires : null;
}

/**
 * Random hex, for names of this page's partials and for idempotency keys (getRandomValues
 * works on plain http too, unlike randomUUID).
 * @param {number} size bytes
 */
export function randomHex(size) {
  const bytes = crypto.getRandomValues(new Uint8Array(size));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
