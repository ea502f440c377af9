// The design note's chunk client, as its sketch does it (with the index fix): SparkMD5 of the
// file, GET /exist, the missing chunks through fetch + FormData a few at a time, POST /merge.
// Usage: node note_chunks.mjs '<json options>'
// Options: base, file, chunkSize, token?, stopAfter? (send that many chunks, then stop without
// merging), wrongChunkHash? (an index sent with a wrong chunkHash), corrupt? (an index whose
// bytes are changed before sending, with their own right chunkHash).
// Prints JSON lines: {"fileHash"}, {"exist"}, {"sent": index, "status", "body"} per chunk,
// {"merge": status, "body"} at the end, or {"instant": url}.
import fs from "node:fs";
import SparkMD5 from "spark-md5";

const opts = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};

const bytes = fs.readFileSync(opts.file);
const count = Math.max(Math.ceil(bytes.length / opts.chunkSize), 1);
const chunks = [];
for (let i = 0; i < count; i++) {
  chunks.push(bytes.subarray(i * opts.chunkSize, (i + 1) * opts.chunkSize));
}
const spark = new SparkMD5.ArrayBuffer();
for (const chunk of chunks) spark.append(chunk);
const fileHash = spark.end();
emit({ fileHash });

const exist = await (await fetch(`${opts.base}/exist?fileHash=${fileHash}`, { headers })).json();
emit({ exist });
if (exist.exists) {
  emit({ instant: exist.url });
  process.exit(0);
}

// The index fix: the remaining chunks keep their own index (the sketch re-numbered them).
let todo = chunks.map((_, index) => index).filter((i) => !exist.uploadedChunks.includes(i));
if (opts.stopAfter !== undefined) todo = todo.slice(0, opts.stopAfter);

async function send(index) {
  let chunk = chunks[index];
  if (index === opts.corrupt) chunk = Buffer.from(chunk.map((b) => b ^ 0xff));
  let chunkHash = SparkMD5.ArrayBuffer.hash(chunk);
  if (index === opts.wrongChunkHash) chunkHash = "0".repeat(32);
  const form = new FormData();
  form.append("chunk", new Blob([chunk]), opts.file.split("/").pop());
  form.append("index", String(index));
  form.append("fileHash", fileHash);
  form.append("chunkHash", chunkHash);
  form.append("totalChunks", String(count));
  const answer = await fetch(`${opts.base}/upload-chunk`, { method: "POST", body: form, headers });
  emit({ sent: index, status: answer.status, body: await answer.text() });
}

const queue = [...todo];
await Promise.all(
  [0, 1, 2].map(async () => {
    while (queue.length) await send(queue.shift());
  }),
);
if (opts.stopAfter !== undefined) process.exit(0);

const merged = await fetch(`${opts.base}/merge`, {
  method: "POST",
  headers: { ...headers, "Content-Type": "application/json" },
  body: JSON.stringify({ fileHash, fileName: opts.file.split("/").pop(), totalChunks: count }),
});
emit({ merge: merged.status, body: await merged.text() });
