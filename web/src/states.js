// @ts-check
// The states of an upload and of its chunks, and which controls each state allows. The values
// are what the page shows in data-state attributes (style.css and the tests read them).

/** One file's upload. */
export const UploadState = Object.freeze({
  QUEUED: "queued",
  HASHING: "hashing",
  CHECKING: "checking", // asking whether the server holds the file already
  UPLOADING: "uploading",
  FINISHING: "finishing", // the server joins the chunks and checks the digest
  DONE: "done",
  PAUSED: "paused",
  FAILED: "failed",
  CANCELLED: "cancelled",
});

/** One chunk, as the chunk map shows it. */
export const ChunkState = Object.freeze({
  WAITING: "waiting",
  SENDING: "sending",
  STORED: "stored",
  // stored, each byte checked by the server as it stored it (against the checksum sent with
  // it), or the server reported the file's SHA-256 we declared
  VERIFIED: "verified",
  FAILED: "failed",
});

/** @typedef {typeof UploadState[keyof typeof UploadState]} UploadStateName */
/** @typedef {typeof ChunkState[keyof typeof ChunkState]} ChunkStateName */
/** @typedef {"pause" | "resume" | "retry" | "cancel"} Control */

const S = UploadState;
/** @type {readonly UploadStateName[]} */
const RUNNING = Object.freeze([S.QUEUED, S.HASHING, S.CHECKING, S.UPLOADING]);

/** The buttons a card shows in each state.
 * @type {Readonly<Record<Control, readonly UploadStateName[]>>} */
export const CONTROLS = Object.freeze({
  pause: RUNNING,
  resume: Object.freeze([S.PAUSED]),
  retry: Object.freeze([S.FAILED]),
  cancel: Object.freeze([...RUNNING, S.PAUSED, S.FAILED]),
});

/**
 * Whether a card shows the button for `control` in `state`.
 * @param {Control} control
 * @param {UploadStateName} state
 */
export function offers(control, state) {
  return CONTROLS[control].includes(state);
}

/** @param {UploadStateName} state */
export const canPause = (state) => RUNNING.includes(state);

/** Paused by the user, or failed: both start again from what the server holds.
 * @param {UploadStateName} state */
export const canResume = (state) => state === S.PAUSED || state === S.FAILED;

/** Nothing more happens to an upload in these states (cancel does nothing).
 * @param {UploadStateName} state */
export const isOver = (state) => state === S.DONE || state === S.CANCELLED;

/**
 * A chunk after the server told how much of it it holds.
 * @param {number} offset
 * @param {number} length
 * @param {boolean} checked its bytes went with checksums the server verified
 * @returns {ChunkStateName}
 */
export const chunkStateAt = (offset, length, checked) =>
  offset === length ? storedState(checked) : ChunkState.WAITING;

/**
 * A chunk whose bytes the server holds: verified when checked on their way into storage.
 * @param {boolean} checked
 * @returns {ChunkStateName}
 */
export const storedState = (checked) => (checked ? ChunkState.VERIFIED : ChunkState.STORED);

/** The server holds all of this chunk.
 * @param {ChunkStateName} state */
export const isHeld = (state) => state === ChunkState.STORED || state === ChunkState.VERIFIED;

/**
 * A chunk once the whole upload is confirmed: verified when the server reported our digest,
 * or when it was verified as it was stored.
 * @param {ChunkStateName} state
 * @param {boolean} reported
 * @returns {ChunkStateName}
 */
export const confirmedChunkState = (state, reported) =>
  reported || state === ChunkState.VERIFIED ? ChunkState.VERIFIED : ChunkState.STORED;
