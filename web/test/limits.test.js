// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import { matches, refusal } from "../src/limits.js";

const OPEN = { tus: { endpoint: "/files/" } };
const file = (name = "photo.JPG", size = 1000, type = "image/jpeg") => ({ name, size, type });

test("an open server takes anything", () => {
  assert.equal(refusal(file(), OPEN, false), null);
  assert.equal(refusal(file("x", 0, ""), { ...OPEN, max_size: null, allowed_types: [] }, false), null);
});

test("a server that requires credentials refuses before anything is sent", () => {
  const info = { ...OPEN, auth: { required: true, accepted: true } };
  assert.match(String(refusal(file(), info, false)), /needs an access token/);
  assert.equal(refusal(file(), info, true), null);
});

test("a file over the size limit is refused with both sizes", () => {
  const info = { ...OPEN, max_size: 999 };
  assert.equal(
    refusal(file(), info, false),
    "photo.JPG is 1.00 KB; this server accepts files up to 999 B.",
  );
  assert.equal(refusal(file("a", 999), info, false), null);
});

test("denied types match by extension (any case), major type or exact type", () => {
  assert.match(String(refusal(file("setup.EXE", 1, ""), { ...OPEN, denied_types: [".exe"] }, false)), /refuses \(\.exe\)/);
  assert.match(String(refusal(file(), { ...OPEN, denied_types: ["image/*"] }, false)), /refuses \(image\/\*\)/);
  assert.equal(refusal(file(), { ...OPEN, denied_types: ["image/png"] }, false), null);
});

test("with allowed types, anything else is refused and the list is named", () => {
  const info = { ...OPEN, allowed_types: ["image/*", ".pdf"] };
  assert.equal(refusal(file(), info, false), null);
  assert.equal(refusal(file("paper.pdf", 1, ""), info, false), null);
  assert.equal(
    refusal(file("notes.txt", 1, "text/plain"), info, false),
    "notes.txt is not a kind of file this server accepts (only image/*, .pdf).",
  );
});

test("a type entry is an extension, a major type or an exact type", () => {
  assert.ok(matches(".tar.gz", "backup.tar.gz", ""));
  assert.ok(!matches(".gz", "backup.gzip", ""));
  assert.ok(matches("video/*", "", "video/mp4"));
  assert.ok(!matches("video/*", "", "videos/mp4"));
  assert.ok(matches("text/csv", "", "text/csv"));
  assert.ok(!matches("text/csv", "", "text/csv2"));
});
