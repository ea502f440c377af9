// @ts-check
// A server on object storage may verify a large upload's SHA-256 in the background (reading
// it back would make the client wait): until then HEAD reports no Repr-Digest. The page asks
// again, backing off, so that "verified" is only ever said of a digest the server checked.
import { request } from "./http.js";
import * as tus from "./tus.js";

/** @typedef {import("./tus.js").Answer} Answer */

/**
 * The hex SHA-256 the server reports for `url`, waiting up to `patience` ms for a pending
 * verification to finish; null when it reports none by then (a server that does not verify).
 * @param {Answer} answer the HEAD answer already at hand
 * @param {string} url
 * @param {AbortSignal} signal
 * @param {number} [patience]
 */
export async function reportedDigest(answer, url, signal, patience = 120_000) {
  let reported = tus.sha256FromReprDigest(answer.header("Repr-Digest"));
  const pending = () => answer.header("Haul-Digest-Pending") === "?1";
  const until = Date.now() + patience;
  for (let pause = 250; reported === null && pending() && Date.now() < until; pause *= 2) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, 5_000)));
    answer = await request("HEAD", url, { signal });
    reported = tus.sha256FromReprDigest(answer.header("Repr-Digest"));
  }
  return reported;
}
