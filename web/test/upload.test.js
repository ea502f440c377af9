// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import { pool } from "../src/pool.js";
import { chunkSize } from "../src/upload.js";

const MiB = 1 << 20;

test("chunks are 8 MiB to 64 MiB, a multiple of 8 MiB, at most about a thousand of them", () => {
  assert.equal(chunkSize(0), 8 * MiB);
  assert.equal(chunkSize(100 * MiB), 8 * MiB);
  assert.equal(chunkSize(8 * 1024 ** 3), 16 * MiB);
  assert.equal(chunkSize(1e13), 64 * MiB);
  for (const size of [1e9, 3e10, 5e10, 6.6e10]) {
    const chunk = chunkSize(size);
    assert.equal(chunk % (8 * MiB), 0); // a whole number of the final object's parts on S3
    assert.ok(Math.ceil(size / chunk) <= 1000, `${size}`);
  }
});

/** Work that ends when told to, so the test decides the order. */
function gate() {
  /** @type {Map<number, { resolve: () => void, reject: (error: Error) => void }>} */
  const open = new Map();
  const work = (/** @type {number} */ item) =>
    new Promise((resolve, reject) => open.set(item, { resolve: () => resolve(undefined), reject }));
  return { open, work };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("the pool runs at most its width at once, and all items in the end", async () => {
  const { open, work } = gate();
  const done = pool([1, 2, 3, 4, 5], 2, work);
  await settle();
  assert.deepEqual([...open.keys()], [1, 2]);
  open.get(2)?.resolve();
  await settle();
  assert.deepEqual([...open.keys()], [1, 2, 3]);
  for (const item of [1, 3]) open.get(item)?.resolve();
  await settle();
  for (const item of [4, 5]) open.get(item)?.resolve();
  await done;
  assert.deepEqual([...open.keys()], [1, 2, 3, 4, 5]);
});

test("after a failure the pool starts nothing new and throws the first failure", async () => {
  const { open, work } = gate();
  /** @type {unknown[]} */
  const heard = [];
  const done = pool([1, 2, 3, 4], 2, work, (error) => heard.push(error));
  await settle();
  const first = new Error("first");
  open.get(1)?.reject(first);
  await settle();
  const second = new Error("second");
  open.get(2)?.reject(second);
  await assert.rejects(done, (error) => error === first);
  assert.deepEqual([...open.keys()], [1, 2]);
  assert.deepEqual(heard, [first, second]);
});

test("a pool of nothing ends at once", async () => {
  await pool([], 4, async () => assert.fail("no work"));
});
