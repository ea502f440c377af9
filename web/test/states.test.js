// @ts-check
import assert from "node:assert/strict";
import { test } from "node:test";
import { Speedometer } from "../src/card.js";
import {
  canPause,
  canResume,
  ChunkState,
  chunkStateAt,
  CONTROLS,
  confirmedChunkState,
  isHeld,
  isOver,
  offers,
  UploadState,
} from "../src/states.js";

const ALL = Object.values(UploadState);

test("the states are fixed: nothing can add or rename one", () => {
  for (const states of [UploadState, ChunkState, CONTROLS, ...Object.values(CONTROLS)]) {
    assert.ok(Object.isFrozen(states));
  }
  assert.throws(() => {
    /** @type {Record<string, string>} */ (/** @type {unknown} */ (UploadState)).DONE = "x";
  }, TypeError);
});

test("the chunk map's states are what the page's legend and styles name", () => {
  assert.deepEqual(Object.values(ChunkState), ["waiting", "sending", "stored", "verified", "failed"]);
});

test("a running upload can be paused; a paused or failed one resumed", () => {
  assert.deepEqual(ALL.filter(canPause), ["queued", "hashing", "checking", "uploading"]);
  assert.deepEqual(ALL.filter(canResume), ["paused", "failed"]);
});

test("done and cancelled uploads are over: cancel has nothing left to do", () => {
  assert.deepEqual(ALL.filter(isOver), ["done", "cancelled"]);
});

test("each state shows the buttons that work in it", () => {
  const shown = Object.fromEntries(
    ALL.map((state) => [
      state,
      /** @type {const} */ (["pause", "resume", "retry", "cancel"]).filter((c) => offers(c, state)),
    ]),
  );
  assert.deepEqual(shown, {
    queued: ["pause", "cancel"],
    hashing: ["pause", "cancel"],
    checking: ["pause", "cancel"],
    uploading: ["pause", "cancel"],
    finishing: [],
    done: [],
    paused: ["resume", "cancel"],
    failed: ["retry", "cancel"],
    cancelled: [],
  });
  // A button is never shown where its action would be ignored.
  for (const state of ALL) {
    if (offers("pause", state)) assert.ok(canPause(state));
    if (offers("resume", state) || offers("retry", state)) assert.ok(canResume(state));
    if (offers("cancel", state)) assert.ok(!isOver(state));
  }
});

test("a chunk is stored once the server holds all of it; verified when checked on the way in", () => {
  for (const checked of [false, true]) {
    assert.equal(chunkStateAt(0, 10, checked), ChunkState.WAITING);
    assert.equal(chunkStateAt(9, 10, checked), ChunkState.WAITING);
  }
  assert.equal(chunkStateAt(10, 10, false), ChunkState.STORED);
  assert.equal(chunkStateAt(0, 0, false), ChunkState.STORED);
  assert.equal(chunkStateAt(10, 10, true), ChunkState.VERIFIED);
  assert.deepEqual(Object.values(ChunkState).filter(isHeld), ["stored", "verified"]);
});

test("a confirmed upload's chunks are verified when the server reported the digest or checked them", () => {
  assert.equal(confirmedChunkState(ChunkState.STORED, true), ChunkState.VERIFIED);
  assert.equal(confirmedChunkState(ChunkState.STORED, false), ChunkState.STORED);
  assert.equal(confirmedChunkState(ChunkState.VERIFIED, false), ChunkState.VERIFIED);
  assert.equal(confirmedChunkState(ChunkState.VERIFIED, true), ChunkState.VERIFIED);
});

test("the speed counts the last five seconds only", () => {
  const speed = new Speedometer();
  assert.equal(speed.perSecond(), 0);
  speed.add(0, 0);
  assert.equal(speed.perSecond(), 0);
  speed.add(1000, 1000);
  assert.equal(speed.perSecond(), 1000);
  speed.add(2000, 7000); // the first sample is more than 5 s old now
  assert.equal(speed.perSecond(), 1000 / 6);
  speed.reset();
  assert.equal(speed.perSecond(), 0);
});
