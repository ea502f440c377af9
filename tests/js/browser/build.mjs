// Bundles the browser client pages the tests load (Uppy, tus-js-client, flow.js, Resumable.js) into the given folder.
import * as esbuild from "esbuild";

const out = process.argv[2];
await esbuild.build({
  entryPoints: ["uppy.js", "uppy-s3.js", "tus-parallel.js", "chunk-libraries.js"].map((name) => new URL(name, import.meta.url).pathname),
  bundle: true,
  format: "esm",
  target: "es2022",
  outdir: out,
  logLevel: "warning",
});
