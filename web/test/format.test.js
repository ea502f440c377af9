// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import { formatBytes, formatDuration } from "../src/format.js";

test("bytes in decimal units, with two figures after the point below ten", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(1000), "1.00 KB");
  assert.equal(formatBytes(1_500_000), "1.50 MB");
  assert.equal(formatBytes(12_345_678), "12.3 MB");
  assert.equal(formatBytes(8 * 1024 ** 3), "8.59 GB");
  assert.equal(formatBytes(2.5e15), "2500.0 TB"); // no unit past TB
});

test("durations in seconds, minutes and hours", () => {
  assert.equal(formatDuration(0), "0 s");
  assert.equal(formatDuration(59.4), "59 s");
  assert.equal(formatDuration(61), "1 min 1 s");
  assert.equal(formatDuration(3599), "59 min 59 s");
  assert.equal(formatDuration(3661), "1 h 1 min");
  assert.equal(formatDuration(-5), "0 s");
});

test("an unknown duration is left blank", () => {
  assert.equal(formatDuration(Number.POSITIVE_INFINITY), "");
  assert.equal(formatDuration(Number.NaN), "");
});
