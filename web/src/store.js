// What the page remembers across reloads and browser restarts, in IndexedDB: unfinished
// uploads (to continue when the same file is picked again) and finished ones (with links).

const DB_NAME = "haul";
const STORE = "uploads";
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

async function transact(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(result?.result);
    tx.onerror = () => reject(tx.error);
  });
}

/** Same file, same server: name, size and modification time, as a browser can tell. */
export function fileKey(endpoint, file) {
  return `${endpoint}|${file.name}|${file.size}|${file.lastModified}`;
}

export const load = (key) => transact("readonly", (s) => s.get(key));
export const save = (entry) => transact("readwrite", (s) => s.put(structuredClone(entry)));
export const remove = (key) => transact("readwrite", (s) => s.delete(key));
export const all = () => transact("readonly", (s) => s.getAll());

/** Keeps the newest finished uploads only. */
export async function pruneFinished(keep = 50) {
  const finished = (await all()).filter((e) => e.done).sort((a, b) => b.doneAt - a.doneAt);
  await Promise.all(finished.slice(keep).map((e) => remove(e.key)));
}
