/**
 * A node told a lower store command level (RAFTBLOCK_STORE_OPS_LEVEL) stands for a node of an
 * earlier build in rolling-upgrade tests, so its PG stores stop where that build's would: at a
 * command above its level (an unknown op there), and at an image holding data past 256 TiB
 * when it cannot reach there. Entries it applied before (at or below its applied index) are
 * skipped as always, and commands within its level apply as before. On a real disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackends } from '../../src/io/testing.js';
import { encodeDiscardFrom, encodeRange, encodeWrite, OpKind, StoreOpsLevel } from '../../src/store/ops.js';
import { Corruption } from '../../src/common/errors.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const TiB = 2 ** 40;

for (const backend of testBackends()) {
  test(`(${backend.name}) a store at level 1 applies commands of level 1 and stops at a far write, a far zero and a discard; at level 2 it takes far offsets`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const store = await openStore(io, tempDir(t));
    t.after(() => store.close());
    store.applyOnlyUpToLevel(StoreOpsLevel.Base);
    await store.apply(1, 1, encodeWrite(1, 17 * TiB, Buffer.alloc(B, 7), { session: 1, seq: 1 }));
    await store.apply(2, 1, new Uint8Array(0));
    for (const cmd of [encodeWrite(1, 300 * TiB, Buffer.alloc(B, 8), { session: 1, seq: 2 }), encodeRange(OpKind.Zero, 1, 2 ** 48 - B, 2 * B, { session: 1, seq: 3 }), encodeDiscardFrom(1, 2 ** 30, { session: 1, seq: 4 })]) {
      await assert.rejects(store.apply(3, 1, cmd), (err: unknown) => err instanceof Corruption && /up to level 1/.test((err as Error).message));
    }
    assert.equal(store.appliedIndex, 2, 'nothing applied past the refusal');
    // Re-applying an entry already applied is skipped before it is judged (a replay after a restart).
    await store.apply(1, 1, encodeWrite(1, 300 * TiB, Buffer.alloc(B, 8), { session: 1, seq: 9 }));
    store.applyOnlyUpToLevel(StoreOpsLevel.FarOffsets);
    await store.apply(3, 1, encodeWrite(1, 300 * TiB, Buffer.alloc(B, 8), { session: 1, seq: 2 }));
    await assert.rejects(store.apply(4, 1, encodeDiscardFrom(1, 2 ** 30, { session: 1, seq: 4 })), Corruption);
    const got = Buffer.alloc(B);
    await store.read(1, 300 * TiB, B, got);
    assert.ok(got.every((b) => b === 8));
    assert.throws(() => store.applyOnlyUpToLevel(0));
    assert.throws(() => store.applyOnlyUpToLevel(99));
  });

  // (Not on the fs backend without the addon: it tells no holes, so its image of a sparse
  // 300 TiB volume would be all of it.)
  if (backend.name !== 'uring') continue;
  test(`(${backend.name}) a store at level 1 stops at an image holding data past 256 TiB before replacing anything, and takes one that holds none`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const source = await openStore(io, tempDir(t));
    t.after(() => source.close());
    await source.apply(1, 1, encodeWrite(1, 17 * TiB, Buffer.alloc(B, 7), { session: 1, seq: 1 }));
    const copy = await openStore(io, tempDir(t));
    t.after(() => copy.close());
    copy.applyOnlyUpToLevel(StoreOpsLevel.Base);
    await copy.pullImage((cursor, image) => source.imageChunk(cursor, 1024 * 1024, undefined, image), 1, 1);
    const got = Buffer.alloc(B);
    await copy.read(1, 17 * TiB, B, got);
    assert.ok(got.every((b) => b === 7), 'an image within level 1 is taken');
    await source.apply(2, 1, encodeWrite(1, 300 * TiB, Buffer.alloc(B, 8), { session: 1, seq: 2 }));
    await assert.rejects(
      copy.pullImage((cursor, image) => source.imageChunk(cursor, 1024 * 1024, undefined, image), 2, 1),
      (err: unknown) => err instanceof Corruption && /past 256 TiB/.test((err as Error).message),
    );
    await copy.read(1, 17 * TiB, B, got);
    assert.ok(got.every((b) => b === 7), 'the refused image replaced nothing');
    assert.equal(copy.appliedIndex, 1);
  });
}
