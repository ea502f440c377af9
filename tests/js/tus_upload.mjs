// Upload one file to a tus server with tus-js-client, driven by the Python test suite.
// Usage: node tus_upload.mjs '<json options>'
// Prints JSON lines on stdout: {"progress": n, "total": n} while sending, then
// {"url": "..."} on success, {"aborted": "..."} after abort(true), or {"error": "..."}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const opts = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let aborted = false;
const upload = new tus.Upload(fs.createReadStream(opts.file), {
  endpoint: opts.endpoint,
  chunkSize: opts.chunkSize ?? Infinity,
  parallelUploads: opts.parallelUploads ?? 1,
  uploadDataDuringCreation: opts.uploadDataDuringCreation ?? false,
  retryDelays: opts.retryDelays ?? [0, 250, 500, 1000, 1000, 2000, 2000, 3000, 3000, 5000, 5000],
  metadata: opts.metadata ?? { filename: opts.file.split("/").pop() },
  removeFingerprintOnSuccess: true,
  onProgress(sent, total) {
    emit({ progress: sent, total });
    if (opts.abortAfterBytes !== undefined && sent >= opts.abortAfterBytes && !aborted) {
      aborted = true;
      upload.abort(true).then(
        () => { emit({ aborted: upload.url }); process.exit(0); },
        (err) => { emit({ error: String(err) }); process.exit(1); },
      );
    }
  },
  onSuccess() {
    emit({ url: upload.url });
    process.exit(0);
  },
  onError(err) {
    emit({ error: String(err) });
    process.exit(1);
  },
});
upload.start();
