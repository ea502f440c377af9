// Bundles the page into src/haul/web/dist, which haul serves at / and /ui/ (no CDN, offline).
// The bundle is committed, so a wheel carries the page without Node; the output depends only
// on the sources and the pinned esbuild. `node build.mjs DIR` writes the same bytes into DIR
// (tests/test_web_bundle.py compares such a build with the committed one).
import * as esbuild from "esbuild";
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const dist = resolve(here, "../src/haul/web/dist");
const out = resolve(process.argv[2] ?? dist);

// Paths inside the source maps are relative to the committed location wherever it is written.
const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: ["src/main.js", "src/hash.worker.js"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  outdir: dist,
  write: false,
  logLevel: "warning",
});
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
for (const file of result.outputFiles) {
  await writeFile(join(out, relative(dist, file.path)), file.contents);
}
for (const file of ["index.html", "style.css"]) {
  await copyFile(join(here, "src", file), join(out, file));
}
console.log(`built the upload page into ${out}`);
