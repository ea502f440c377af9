// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import { NetworkError, ServerError } from "../src/errors.js";
import {
  Attempts,
  backoff,
  isAbort,
  isTransient,
  MAX_PIECE,
  nextPiece,
  retryAfterOf,
  retryAfterSeconds,
  sleep,
  transientStatus,
} from "../src/retry.js";

const lowest = () => 0;
const highest = () => 1 - Number.EPSILON;

test("only failures in a row count: progress since the last failure starts afresh", () => {
  const attempts = new Attempts();
  attempts.failed(0);
  attempts.failed(0);
  assert.equal(attempts.count, 2);
  attempts.failed(4096); // a PATCH got through in between
  assert.equal(attempts.count, 1);
  attempts.failed(4096, false); // offline: not a try
  assert.equal(attempts.count, 1);
  attempts.failed(4096);
  assert.equal(attempts.count, 2);
});

test("a failed PATCH halves the next piece down to 256 KiB; a success doubles it back", () => {
  let piece = MAX_PIECE;
  for (let i = 0; i < 10; i += 1) piece = nextPiece(piece, false);
  assert.equal(piece, 256 * 1024);
  piece = nextPiece(piece, true);
  assert.equal(piece, 512 * 1024);
  for (let i = 0; i < 10; i += 1) piece = nextPiece(piece, true);
  assert.equal(piece, MAX_PIECE);
});

test("backoff doubles per attempt, half of it random", () => {
  assert.equal(backoff(1, null, lowest), 500);
  assert.equal(backoff(2, null, lowest), 1000);
  assert.equal(backoff(3, null, lowest), 2000);
  assert.ok(backoff(1, null, highest) < 1000);
  assert.ok(backoff(1, null, highest) > 999);
});

test("backoff stops growing at 30 s", () => {
  assert.equal(backoff(6, null, lowest), 15_000);
  assert.equal(backoff(20, null, lowest), 15_000);
  assert.ok(backoff(20, null, highest) <= 30_000);
});

test("backoff waits at least as long as the server's Retry-After", () => {
  assert.equal(backoff(1, 7, highest), 7000);
  assert.equal(backoff(1, 120, lowest), 120_000);
  assert.equal(backoff(3, 1, lowest), 2000); // the backoff is longer already
});

test("Retry-After counts in seconds; anything else leaves it to the backoff", () => {
  assert.equal(retryAfterSeconds("5"), 5);
  assert.equal(retryAfterSeconds(" 12 "), 12);
  assert.equal(retryAfterSeconds(null), null);
  assert.equal(retryAfterSeconds(""), null);
  assert.equal(retryAfterSeconds("0"), null);
  assert.equal(retryAfterSeconds("Wed, 21 Oct 2026 07:28:00 GMT"), null);
});

test("conflicts, locks, overload and server errors are transient; refusals are not", () => {
  for (const status of [409, 423, 429, 460, 500, 502, 503, 507]) assert.ok(transientStatus(status), `${status}`);
  for (const status of [400, 401, 403, 404, 410, 413, 415, 422]) assert.ok(!transientStatus(status), `${status}`);
});

test("network failures and transient answers are retried, other errors not", () => {
  assert.ok(isTransient(new NetworkError("reset")));
  assert.ok(isTransient(new ServerError(503, null, "busy", 3)));
  assert.ok(!isTransient(new ServerError(413, "ERR_TOO_LARGE", "too large", null)));
  assert.ok(!isTransient(new Error("bug")));
  assert.ok(!isTransient(new DOMException("stopped", "AbortError")));
});

test("only a ServerError carries a Retry-After", () => {
  assert.equal(retryAfterOf(new ServerError(429, null, "busy", 9)), 9);
  assert.equal(retryAfterOf(new NetworkError("reset")), null);
});

test("an AbortError means stopped on purpose", () => {
  assert.ok(isAbort(new DOMException("stopped", "AbortError")));
  assert.ok(!isAbort(new NetworkError("reset")));
  assert.ok(!isAbort(null));
  assert.ok(!isAbort("AbortError"));
});

test("sleep ends early with an AbortError when its signal aborts", async () => {
  const controller = new AbortController();
  const waiting = sleep(3_600_000, controller.signal);
  controller.abort();
  await assert.rejects(waiting, (error) => isAbort(error));
});

test("sleep resolves when its time is up", async () => {
  await sleep(1, new AbortController().signal);
});
