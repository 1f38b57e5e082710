/**
 * Where the addon loads but io_uring is refused (a container whose seccomp profile blocks it,
 * as Docker's default does), a node runs on the fs backend, which called everything below the
 * end of a data file data: a PG's snapshot image (what rebuilds a replica), its digest and
 * BLOCK_STATUS read a volume with a few blocks written far apart as if every zero between them
 * were written. The fs backend now tells holes through the addon's lseek and extentMap, as the
 * uring backend does: the image carries the written blocks only. Without the addon (the
 * portable fallback) it still carries every byte below the end of the file.
 * Real PG stores on a real disk.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import { fsWithAddonBackend } from '../../src/io/testing.js';
import type { BlockIo } from '../../src/io/types.js';
import type { PgStore } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStoreForTest } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const MiB = 2 ** 20;
/** Where volume 1 ends: its last block is written, so its data file is this long. */
const volumeBytes = 64 * MiB;
/** The blocks written (one each) and their byte, far apart in the volume. */
const writes: [offset: number, byte: number][] = [
  [0, 0x11],
  [24 * MiB + 2 * B, 0x22],
  [volumeBytes - B, 0x33],
];

/** A store on `io` holding `writes` in volume 1, applied at indexes 1.., and on disk. */
async function sparseVolume(t: TestContext, io: BlockIo): Promise<PgStore> {
  const store = await openStoreForTest(t, io, tempDir(t));
  for (let i = 0; i < writes.length; i++) {
    const [offset, byte] = writes[i];
    await store.apply(i + 1, 1, encodeWrite(1, offset, Buffer.alloc(B, byte), { session: 1, seq: i + 1 }));
  }
  await store.checkpoint();
  return store;
}

/** A replica rebuilt on `io` from `source`'s image, pulled in 1 MiB chunks, and the data bytes the image carried. */
async function rebuiltFrom(t: TestContext, io: BlockIo, source: PgStore): Promise<{ copy: PgStore; carriedBytes: number }> {
  const copy = await openStoreForTest(t, io, tempDir(t));
  const carriedBytes = await copy.pullImage((cursor, image) => source.imageChunk(cursor, MiB, undefined, image), writes.length, 1);
  return { copy, carriedBytes };
}

async function assertHoldsWrites(store: PgStore, what: string): Promise<void> {
  for (const [offset, byte] of writes) {
    const got = Buffer.alloc(B, 0xee);
    await store.read(1, offset, B, got);
    assert.ok(got.every((b) => b === byte), `${what}: the block at ${offset}`);
  }
  const between = Buffer.alloc(B, 0xee);
  await store.read(1, 8 * MiB, B, between);
  assert.ok(between.every((b) => b === 0), `${what}: a block never written reads as zeros`);
}

const withAddon = fsWithAddonBackend();

test('(fs with the addon) the image of a sparse volume carries its written blocks only, and block status calls the rest holes', { skip: withAddon.skip }, async (t) => {
  const io = withAddon.make();
  t.after(() => io.close());
  const store = await sparseVolume(t, io);
  assert.deepEqual(await store.blockStatus(1, 0, volumeBytes), [
    { length: B, hole: false, zero: false },
    { length: writes[1][0] - B, hole: true, zero: true },
    { length: B, hole: false, zero: false },
    { length: writes[2][0] - writes[1][0] - B, hole: true, zero: true },
    { length: B, hole: false, zero: false },
  ]);
  const { copy, carriedBytes } = await rebuiltFrom(t, io, store);
  assert.equal(carriedBytes, writes.length * B, 'the image carries the written blocks, not the zeros between them');
  await assertHoldsWrites(copy, 'rebuilt from the image');
});

test('(fs without the addon) the image of the same volume carries every byte below the end of its file', async (t) => {
  const io = new FsBlockIo();
  t.after(() => io.close());
  const store = await sparseVolume(t, io);
  assert.deepEqual(await store.blockStatus(1, 0, volumeBytes), [{ length: volumeBytes, hole: false, zero: false }]);
  const { copy, carriedBytes } = await rebuiltFrom(t, io, store);
  assert.equal(carriedBytes, volumeBytes);
  await assertHoldsWrites(copy, 'rebuilt from the image');
});
