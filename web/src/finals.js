// @ts-check
// The final upload that joins a file's partial uploads: created (before the chunks' bytes are
// sent, so an S3 store can write them straight into the final object), and told the file's
// SHA-256 once the page knows it. Both are retried a few times: the server may be assembling.
import { ServerError } from "./errors.js";
import { request } from "./http.js";
import * as retry from "./retry.js";
import * as tus from "./tus.js";

const PATIENCE = 600_000; // ms without an answer: the server may hash the whole file first

/**
 * Runs `attempt` until it succeeds, a few times for a transient failure; a 422 (the bytes are
 * not the file's) or any other refusal is thrown at once.
 * @template T
 * @param {() => Promise<T>} attempt
 * @param {AbortSignal} signal
 */
async function retried(attempt, signal) {
  for (let attempts = 1; ; attempts += 1) {
    try {
      return await attempt();
    } catch (error) {
      const refused = error instanceof ServerError && error.status === 422;
      if (refused || !retry.isTransient(error) || attempts >= retry.MAX_FINAL_ATTEMPTS) throw error;
      await retry.sleep(retry.backoff(attempts, retry.retryAfterOf(error)), signal);
    }
  }
}

/**
 * Creates the final upload (asked again for the same partials, the server answers with the
 * same one); its URL.
 * @param {string} endpoint
 * @param {{ name: string, type: string }} file
 * @param {string} concat `Upload-Concat: final;...`
 * @param {string | null} sha256 hex, when already known
 * @param {AbortSignal} signal
 */
export async function create(endpoint, file, concat, sha256, signal) {
  /** @type {Record<string, string>} */
  const headers = { "Upload-Concat": concat, "Upload-Metadata": tus.fileMetadata(file) };
  if (sha256) headers["Repr-Digest"] = tus.reprDigest(sha256);
  const created = await retried(
    () => request("POST", endpoint, { headers, stallTimeout: PATIENCE, signal }),
    signal,
  );
  return tus.locationOf(created, endpoint);
}

/**
 * Declares the file's digest to a final upload created without it: an empty PATCH at the
 * offset HEAD reports (0 until assembled). The server verifies the assembly against it; a
 * different digest declared before is a 409.
 * @param {string} url
 * @param {string} sha256 hex
 * @param {AbortSignal} signal
 */
export async function declare(url, sha256, signal) {
  await retried(async () => {
    const head = await request("HEAD", url, { stallTimeout: PATIENCE, signal });
    await request("PATCH", url, {
      headers: {
        "Upload-Offset": String(tus.offsetOf(head)),
        "Content-Type": tus.OCTETS,
        "Repr-Digest": tus.reprDigest(sha256),
      },
      stallTimeout: PATIENCE, // declared after the assembly, it is checked there and then
      signal,
    });
  }, signal);
}
