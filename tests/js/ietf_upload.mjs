// Upload one file with tus-js-client speaking an IETF resumable-upload draft
// (protocol "ietf-draft-03" = interop version 5, "ietf-draft-05" = interop version 6).
// Usage: node ietf_upload.mjs '<json options>'
// Prints JSON lines on stdout: {"progress": n, "total": n} while sending, then
// {"url": "..."} on success or {"error": "..."}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const opts = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const upload = new tus.Upload(fs.createReadStream(opts.file), {
  endpoint: opts.endpoint,
  protocol: opts.protocol,
  chunkSize: opts.chunkSize ?? Infinity,
  uploadDataDuringCreation: opts.uploadDataDuringCreation ?? false,
  retryDelays: [0, 250, 500, 1000, 1000, 2000, 2000, 3000, 3000, 5000, 5000],
  metadata: { filename: opts.file.split("/").pop() },
  removeFingerprintOnSuccess: true,
  onProgress(sent, total) {
    emit({ progress: sent, total });
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
