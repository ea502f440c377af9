// @ts-check
// Work on many items, a few at a time, stopping at the first failure.

/**
 * Runs `work` on each item, at most `width` at once. After a failure no new item starts;
 * `onFailure` hears of each failure (to stop the running ones), and the first is thrown once
 * every running item has ended.
 * @template T
 * @param {T[]} items
 * @param {number} width
 * @param {(item: T) => Promise<void>} work
 * @param {(error: unknown) => void} [onFailure]
 */
export async function pool(items, width, work, onFailure = () => {}) {
  const queue = [...items];
  let failed = false;
  /** @type {unknown} */
  let failure;
  const worker = async () => {
    while (queue.length && !failed) {
      try {
        await work(/** @type {T} */ (queue.shift()));
      } catch (error) {
        if (!failed) [failed, failure] = [true, error];
        onFailure(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failed) throw failure;
}
