// The main thread's side of hash.worker.js: one worker per job, ended when the job ends.

function run(message, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("hash.worker.js", import.meta.url), { type: "module" });
    const stop = () => {
      worker.terminate();
      reject(new DOMException("hashing stopped", "AbortError"));
    };
    signal?.addEventListener("abort", stop, { once: true });
    const finish = () => {
      signal?.removeEventListener("abort", stop);
      worker.terminate();
    };
    worker.onmessage = ({ data }) => {
      if (data.kind === "progress") onProgress?.(data.done);
      else if (data.kind === "done") {
        finish();
        resolve(data.result);
      } else {
        finish();
        reject(new Error(`cannot read the file: ${data.message}`));
      }
    };
    worker.onerror = (event) => {
      finish();
      reject(new Error(`the hashing worker failed: ${event.message}`));
    };
    worker.postMessage(message);
  });
}

/** Hex SHA-256 of the whole file. */
export function hashFile(file, onProgress, signal) {
  return run({ kind: "hash", file }, onProgress, signal);
}

/** Base64 answer to a `Haul-Challenge: <base64 nonce> a-b,c-d` header. */
export async function answerChallenge(file, header) {
  const [nonce64, spans] = header.trim().split(" ");
  const nonce = Uint8Array.from(atob(nonce64), (c) => c.charCodeAt(0));
  const ranges = spans.split(",").map((span) => span.split("-").map(Number));
  if (ranges.some(([a, b]) => !(a >= 0 && b >= a && b < file.size))) {
    throw new Error("the server asked for bytes the file does not have");
  }
  const digest = await run({ kind: "prove", file, nonce, ranges });
  return btoa(String.fromCharCode(...digest));
}

/** `Repr-Digest` value (RFC 9530) for a hex SHA-256. */
export function reprDigest(hex) {
  const bytes = hex.match(/../g).map((pair) => parseInt(pair, 16));
  return `sha-256=:${btoa(String.fromCharCode(...bytes))}:`;
}

/** The hex SHA-256 in a `Repr-Digest` header, or null. */
export function sha256FromReprDigest(value) {
  const match = /sha-256=:([A-Za-z0-9+/=]+):/.exec(value ?? "");
  if (!match) return null;
  return Array.from(atob(match[1]), (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
}
