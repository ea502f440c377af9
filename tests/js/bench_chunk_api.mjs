// One timed upload for bench/chunk_api_throughput.py, in one of two ways, from the same Node:
//   "note": the design note's flow (SparkMD5 of the file first, timed apart; then GET /exist,
//           POST /upload-chunk multipart with index and fileHash, N at a time, POST /merge)
//   "tus":  tus-js-client with the same chunk size and parallelUploads N
// Usage: node bench_chunk_api.mjs '{"way", "base", "file", "chunkSize", "parallel",
//                                   "chunkHash"?, "fieldsFirst"?, "blobForm"?}'
// Prints one JSON line: {"way", "ms" (first request to the final answer), "url"}, and for the
// note's flow "hashMs" (SparkMD5 of the file, before) and "mergeMs" (the /merge request).
import fs from "node:fs";
import SparkMD5 from "spark-md5";
import * as tus from "tus-js-client";

const opts = JSON.parse(process.argv[2]);
const name = opts.file.split("/").pop();

/** The form as fetch + FormData sends it (Node's own multipart encoder).
 * @param {[string, string | Blob][]} parts */
function formData(parts) {
  const form = new FormData();
  for (const [field, value] of parts) {
    if (typeof value === "string") form.append(field, value);
    else form.append(field, value, name);
  }
  return { body: form };
}

/** The same multipart bytes a browser's FormData sends, as one Blob: Node's FormData encoder
 * is slow (about 60-90 MB/s here, against 150-200 for a Blob body), a browser's is not.
 * @param {[string, string | Blob][]} parts */
function blobForm(parts) {
  const boundary = `----haulbench${Math.random().toString(16).slice(2)}`;
  /** @type {(string | Blob)[]} */
  const pieces = [];
  for (const [field, value] of parts) {
    const file = typeof value === "string" ? "" : `; filename="${name}"`;
    const type = typeof value === "string" ? "" : "\r\nContent-Type: application/octet-stream";
    pieces.push(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"${file}${type}\r\n\r\n`);
    pieces.push(value, "\r\n");
  }
  pieces.push(`--${boundary}--\r\n`);
  const headers = { "Content-Type": `multipart/form-data; boundary=${boundary}` };
  return { body: new Blob(pieces), headers };
}

async function note() {
  const file = await fs.openAsBlob(opts.file); // a Blob backed by the file, like a browser's File
  const count = Math.max(Math.ceil(file.size / opts.chunkSize), 1);
  const chunks = Array.from({ length: count }, (_, i) =>
    file.slice(i * opts.chunkSize, (i + 1) * opts.chunkSize),
  );
  const hashing = performance.now();
  const spark = new SparkMD5.ArrayBuffer();
  for (const chunk of chunks) spark.append(await chunk.arrayBuffer());
  const fileHash = spark.end();
  const hashMs = performance.now() - hashing;

  const started = performance.now();
  const exist = await (await fetch(`${opts.base}/exist?fileHash=${fileHash}`)).json();
  if (exist.exists) throw new Error("the server holds this file already: not a fair run");
  const send = async (/** @type {number} */ index) => {
    /** @type {[string, string | Blob][]} */
    const parts = [["index", String(index)], ["fileHash", fileHash]];
    if (opts.chunkHash) {
      parts.push(["chunkHash", SparkMD5.ArrayBuffer.hash(await chunks[index].arrayBuffer())]);
    }
    // The note appends the chunk first; with fieldsFirst the fields come before it.
    if (opts.fieldsFirst) parts.push(["chunk", chunks[index]]);
    else parts.unshift(["chunk", chunks[index]]);
    const request = opts.blobForm ? blobForm(parts) : formData(parts);
    const answer = await fetch(`${opts.base}/upload-chunk`, { method: "POST", ...request });
    if (!answer.ok) throw new Error(`chunk ${index}: ${answer.status} ${await answer.text()}`);
  };
  const queue = chunks.map((_, index) => index).filter((i) => !exist.uploadedChunks.includes(i));
  await Promise.all(
    Array.from({ length: opts.parallel }, async () => {
      while (queue.length) await send(/** @type {number} */ (queue.shift()));
    }),
  );
  const merging = performance.now();
  const merged = await fetch(`${opts.base}/merge`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ fileHash, fileName: name, totalChunks: count }),
  });
  if (!merged.ok) throw new Error(`merge: ${merged.status} ${await merged.text()}`);
  const { url } = await merged.json();
  const end = performance.now();
  return { ms: end - started, hashMs, mergeMs: end - merging, url };
}

function tusUpload() {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const upload = new tus.Upload(fs.createReadStream(opts.file), {
      endpoint: `${opts.base}/files/`,
      chunkSize: opts.chunkSize,
      parallelUploads: opts.parallel,
      metadata: { filename: name },
      retryDelays: [],
      onSuccess: () => resolve({ ms: performance.now() - started, url: upload.url }),
      onError: reject,
    });
    upload.start();
  });
}

const result = opts.way === "note" ? await note() : await tusUpload();
process.stdout.write(JSON.stringify({ way: opts.way, ...result }) + "\n");
