// @ts-check
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { crc32 } from "node:zlib";
import { createCRC32, createMD5 } from "hash-wasm";
import { CHEAPEST_FIRST, cheapest, checksumHeader } from "../src/checksum.js";

const HAUL_OFFERS = "sha1,sha256,sha512,md5,crc32"; // src/haul/wire/checksums.py, in its order

test("the cheapest algorithm the server offers is chosen, whatever order it lists them in", () => {
  assert.equal(cheapest("creation,checksum", HAUL_OFFERS), "crc32");
  assert.equal(cheapest("checksum", "sha256, MD5 ,sha1"), "md5");
  assert.equal(cheapest("checksum", "sha512,sha256"), "sha256");
  assert.deepEqual(CHEAPEST_FIRST, ["crc32", "md5", "sha1", "sha256", "sha512"]);
});

test("no checksum without the checksum extension, or without an algorithm the page knows", () => {
  assert.equal(cheapest("creation,termination", HAUL_OFFERS), null);
  assert.equal(cheapest(null, null), null);
  assert.equal(cheapest("checksum", "blake3"), null);
  assert.equal(cheapest("checksum", ""), null);
});

test("hash-wasm's CRC-32 (the worker's) is the big-endian IEEE CRC the server compares (zlib's)", async () => {
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 7919) % 251);
  const hasher = await createCRC32();
  hasher.init();
  hasher.update(bytes);
  const digest = hasher.digest("binary");
  const expected = Buffer.alloc(4);
  expected.writeUInt32BE(crc32(bytes));
  assert.equal(checksumHeader("crc32", digest), `crc32 ${expected.toString("base64")}`);
});

test("an MD5 checksum header is the base64 of the raw digest, as tus has it", async () => {
  const bytes = new TextEncoder().encode("a chunk of a file");
  const hasher = await createMD5();
  hasher.init();
  hasher.update(bytes);
  const expected = createHash("md5").update(bytes).digest("base64");
  assert.equal(checksumHeader("md5", hasher.digest("binary")), `md5 ${expected}`);
});
