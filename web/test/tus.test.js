// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  encodeMetadata,
  expiresOf,
  fileMetadata,
  finalConcat,
  idempotencyKey,
  locationOf,
  offsetOf,
  partMetadata,
  randomHex,
  reprDigest,
  sha256FromReprDigest,
} from "../src/tus.js";

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** @param {Record<string, string>} headers */
function answer(headers) {
  const lower = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { status: 200, header: (/** @type {string} */ name) => lower.get(name.toLowerCase()) ?? null };
}

/** @param {string} value */
const decoded = (value) =>
  Object.fromEntries(
    value.split(",").map((pair) => {
      const [key, encoded] = pair.split(" ");
      return [key, Buffer.from(encoded, "base64").toString("utf8")];
    }),
  );

test("metadata values are base64 of their UTF-8 bytes", () => {
  assert.equal(encodeMetadata([["filename", "a.txt"]]), "filename YS50eHQ=");
  const value = encodeMetadata([["filename", "Größe €.txt"], ["filetype", "text/plain"]]);
  assert.deepEqual(decoded(value), { filename: "Größe €.txt", filetype: "text/plain" });
});

test("a file's metadata leaves out a type the browser does not know", () => {
  assert.deepEqual(decoded(fileMetadata({ name: "x.bin", type: "" })), { filename: "x.bin" });
  assert.deepEqual(decoded(fileMetadata({ name: "p.png", type: "image/png" })), {
    filename: "p.png",
    filetype: "image/png",
  });
});

test("a partial names its group and its place", () => {
  assert.deepEqual(decoded(partMetadata("abc123", 7)), { "haul-part": "abc123 7" });
});

test("the final concatenation lists the partials' paths in order", () => {
  const urls = ["http://h:1/files/b", "http://h:1/files/a?x=1", "http://h:1/files/c"];
  assert.equal(finalConcat(urls), "final;/files/b /files/a /files/c");
});

test("an idempotency key goes as a quoted string", () => {
  assert.equal(idempotencyKey("k1"), '"k1"');
});

test("Repr-Digest carries the SHA-256 as base64 between colons", () => {
  assert.equal(reprDigest(EMPTY_SHA256), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
  assert.equal(sha256FromReprDigest(reprDigest(EMPTY_SHA256)), EMPTY_SHA256);
});

test("the SHA-256 is found among other digests, and only there", () => {
  const value = `sha-512=:AAAA:, ${reprDigest(EMPTY_SHA256)}`;
  assert.equal(sha256FromReprDigest(value), EMPTY_SHA256);
  assert.equal(sha256FromReprDigest("sha-512=:AAAA:"), null);
  assert.equal(sha256FromReprDigest(null), null);
  assert.equal(sha256FromReprDigest(undefined), null);
});

test("the offset of an answer, with a fallback when it has none", () => {
  assert.equal(offsetOf(answer({ "Upload-Offset": "1048576" })), 1048576);
  assert.equal(offsetOf(answer({})), 0);
  assert.equal(offsetOf(answer({}), 42), 42);
  assert.equal(offsetOf(answer({ "Upload-Offset": "0" }), 42), 0);
});

test("a creation's Location is resolved against the endpoint", () => {
  const endpoint = "https://example.test/files/";
  assert.equal(locationOf(answer({ Location: "/files/abc" }), endpoint), "https://example.test/files/abc");
  assert.equal(locationOf(answer({ Location: "abc" }), endpoint), "https://example.test/files/abc");
  assert.equal(locationOf(answer({ Location: "https://other.test/u/1" }), endpoint), "https://other.test/u/1");
});

test("Upload-Expires is read as a time, or not at all", () => {
  const expires = answer({ "Upload-Expires": "Wed, 25 Jun 2031 16:00:00 GMT" });
  assert.equal(expiresOf(expires), Date.UTC(2031, 5, 25, 16));
  assert.equal(expiresOf(answer({})), null);
  assert.equal(expiresOf(answer({ "Upload-Expires": "soon" })), null);
});

test("random names are hex of the asked length and differ", () => {
  const names = new Set(Array.from({ length: 50 }, () => randomHex(12)));
  assert.equal(names.size, 50);
  for (const name of names) assert.match(name, /^[0-9a-f]{24}$/);
});
