// Bundles the page into src/haul/web/dist, which haul serves at / and /ui/ (no CDN, offline).
import * as esbuild from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const out = new URL("../src/haul/web/dist/", import.meta.url).pathname;
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await esbuild.build({
  entryPoints: ["src/main.js", "src/hash.worker.js"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  outdir: out,
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) {
  await copyFile(new URL(`src/${file}`, import.meta.url), out + file);
}
console.log(`built the upload page into ${out}`);
