// @ts-check
// What the page remembers across reloads and browser restarts, in IndexedDB: unfinished
// uploads (to continue when the same file is picked again) and finished ones (with links).

/**
 * An upload under way: where each chunk's partial upload is (null: not created yet).
 * @typedef {object} Unfinished
 * @property {string} key see fileKey
 * @property {false} [done]
 * @property {string} name
 * @property {number} size
 * @property {string} type
 * @property {number} lastModified
 * @property {string | null} sha256 hex, of the whole file (null while it is being computed)
 * @property {number} chunkSize
 * @property {boolean} single one plain upload; no concatenation needed
 * @property {(string | null)[]} parts
 * @property {string | null} [final] the final upload joining them, once made
 * @property {boolean} [checked] every byte stored so far went with a checksum the server verified
 * @property {number} createdAt
 * @property {number | null} expiresAt the latest Upload-Expires the server gave
 */
/**
 * A completed upload, listed with its link.
 * @typedef {object} Finished
 * @property {string} key
 * @property {true} done
 * @property {string} url
 * @property {string} name
 * @property {number} size
 * @property {string} sha256
 * @property {boolean} instant
 * @property {number} doneAt
 */
/** @typedef {Unfinished | Finished} Entry */

const DB_NAME = "haul";
const STORE = "uploads";
/** @type {Promise<IDBDatabase> | null} */
let opened = null;

function database() {
  opened ??= new Promise((resolve, reject) => {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "key" });
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  return opened;
}

/**
 * @template T
 * @param {IDBTransactionMode} mode
 * @param {(store: IDBObjectStore) => IDBRequest<T>} work
 * @returns {Promise<T>}
 */
async function transact(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(result?.result);
    tx.onerror = () => reject(tx.error);
  });
}

/**
 * Same file, same server: name, size and modification time, as a browser can tell.
 * @param {string} endpoint
 * @param {{ name: string, size: number, lastModified: number }} file
 */
export function fileKey(endpoint, file) {
  return `${endpoint}|${file.name}|${file.size}|${file.lastModified}`;
}

/** @param {string} key @returns {Promise<Entry | undefined>} */
export const load = (key) => transact("readonly", (s) => s.get(key));
/** @param {Entry} entry */
export const save = (entry) => transact("readwrite", (s) => s.put(structuredClone(entry)));
/** @param {string} key */
export const remove = (key) => transact("readwrite", (s) => s.delete(key));
/** @returns {Promise<Entry[]>} */
export const all = () => transact("readonly", (s) => s.getAll());

/** Keeps the newest finished uploads only. */
export async function pruneFinished(keep = 50) {
  const finished = (await all()).filter(isFinished).sort((a, b) => b.doneAt - a.doneAt);
  await Promise.all(finished.slice(keep).map((e) => remove(e.key)));
}

/** @param {Entry} entry @returns {entry is Finished} */
export const isFinished = (entry) => entry.done === true;
