// @ts-check
// The instant upload: a creation that declares the file's digest. The server completes it at
// once when the caller holds the bytes already, or asks for proof (a few ranges hashed with
// its nonce) when another owner stored them.
import { answerChallenge } from "./hasher.js";
import { request } from "./http.js";
import * as retry from "./retry.js";
import * as tus from "./tus.js";

/**
 * The upload the server made, and how many bytes of it it holds (the file's size: instant).
 * @param {string} endpoint
 * @param {File} file
 * @param {string} sha256 hex
 * @param {AbortSignal} signal
 */
export async function ask(endpoint, file, sha256, signal) {
  const created = await request("POST", endpoint, {
    headers: {
      "Upload-Length": String(file.size),
      "Upload-Metadata": tus.fileMetadata(file),
      "Repr-Digest": tus.reprDigest(sha256),
    },
    signal,
  });
  const url = tus.locationOf(created, endpoint);
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
  return { url, offset };
}
