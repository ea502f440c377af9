// @ts-check
// The server's limits (GET /api/info), checked before a byte is sent. The server checks the
// same rules again; this only saves the user a wait for an answer that is known already.
import { formatBytes } from "./format.js";

/**
 * What GET /api/info tells (the fields the page reads).
 * @typedef {object} Info
 * @property {{ endpoint: string, extensions?: string[], checksum_algorithms?: string[] }} tus
 * @property {number | null} [max_size]
 * @property {string[]} [allowed_types]
 * @property {string[]} [denied_types]
 * @property {boolean} [instant_upload]
 * @property {{ required: boolean, accepted: boolean }} [auth]
 */

/**
 * Whether a file matches a type entry: `.ext`, `major/*` or an exact type.
 * @param {string} entry
 * @param {string} name lower case
 * @param {string} type lower case
 */
export function matches(entry, name, type) {
  if (entry.startsWith(".")) return name.endsWith(entry);
  if (entry.endsWith("/*")) return type.startsWith(entry.slice(0, -1));
  return type === entry;
}

/**
 * Why the server would refuse this file, in words; null when it would take it.
 * @param {{ name: string, size: number, type: string }} file
 * @param {Info} info
 * @param {boolean} hasToken
 */
export function refusal(file, info, hasToken) {
  if (info.auth?.required && !hasToken) {
    return "This server needs an access token: enter it above, then retry.";
  }
  if (info.max_size != null && file.size > info.max_size) {
    return (
      `${file.name} is ${formatBytes(file.size)}; this server accepts files up to ` +
      `${formatBytes(info.max_size)}.`
    );
  }
  const name = file.name.toLowerCase();
  const type = (file.type || "").toLowerCase();
  const denied = (info.denied_types ?? []).find((entry) => matches(entry, name, type));
  if (denied) return `${file.name} is a kind of file this server refuses (${denied}).`;
  const allowed = info.allowed_types ?? [];
  if (allowed.length && !allowed.some((entry) => matches(entry, name, type))) {
    return `${file.name} is not a kind of file this server accepts (only ${allowed.join(", ")}).`;
  }
  return null;
}
