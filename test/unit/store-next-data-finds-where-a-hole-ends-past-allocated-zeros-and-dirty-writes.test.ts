/**
 * PgStore.nextData, which tells a gateway how far a hole reaches in one call per PG instead of
 * one block status per extent: it answers the first offset of the asked range that is not a
 * hole in the replica's files, where data or allocated zeros (a NO_HOLE zero) start, and the
 * range's end when there is none, however long the range (a terabyte here). A write applied
 * but still in the write-behind (not yet in the files) counts: the answer must not be staler
 * than a block status. A volume the replica holds no file of answers the range's end.
 *
 * Real PG stores on a real disk, on each backend. The fs backend tells no holes from data (it
 * reports data up to the end of the file), so there the answer is the range's start inside the
 * file, its end past it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackends } from '../../src/io/testing.js';
import { openBlockIo } from '../../src/io/select.js';
import { holesTrusted } from '../../src/io/holes-trusted.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const MiB = 1024 * 1024;
const TiB = 2 ** 40;

for (const backend of testBackends()) {
  test(`(${backend.name}) nextData answers where data or allocated zeros end a hole, a dirty write included, else the range's end`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    // No timed flush: a write stays in the write-behind until something flushes it.
    const scratch = new ScratchPool(io, { flushDelayMs: 60_000 });
    const store = await PgStore.open(io, scratch, tempDir(t), 7);
    t.after(() => store.close());
    let index = 0;
    const seq = (): { session: number; seq: number } => ({ session: 1, seq: index });

    // Volume 1: 4 blocks of data at 8 MiB, 2 blocks zeroed keeping them allocated at 4 MiB, and
    // the second of the data blocks punched (a hole inside the data).
    await store.apply(++index, 1, encodeWrite(1, 8 * MiB, Buffer.alloc(4 * B, 0x5a), seq()));
    await store.checkpoint();
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, 4 * MiB, 2 * B, seq()));
    await store.apply(++index, 1, encodeRange(OpKind.Zero, 1, 8 * MiB + B, B, seq()));
    let fileEnd = 8 * MiB + 4 * B;

    /** The answer on this backend: uring's as given, fs's from the file's end alone. */
    const expected = (offset: number, length: number, onUring: number): number =>
      backend.name === 'uring' ? onUring : offset < fileEnd ? offset : offset + length;
    const check = async (offset: number, length: number, onUring: number, what: string): Promise<void> => {
      assert.equal(await store.nextData(1, offset, length), expected(offset, length, onUring), what);
    };

    await check(0, 16 * MiB, 4 * MiB, 'a hole ended by allocated zeros');
    await check(0, 4 * MiB, 4 * MiB, 'a range that is one hole answers its end');
    await check(4 * MiB + 2 * B, 8 * MiB, 8 * MiB, 'a hole ended by data');
    await check(8 * MiB + 2 * B, MiB, 8 * MiB + 2 * B, 'a range that starts in data answers its start');
    await check(8 * MiB + B, MiB, 8 * MiB + 2 * B, 'a punched block inside the data is a hole');
    await check(8 * MiB + 4 * B, TiB, 8 * MiB + 4 * B + TiB, 'nothing past the data: the end of a terabyte range');

    // A write applied but still dirty (in memory, not in the file) ends the hole too.
    await store.apply(++index, 1, encodeWrite(1, TiB - B, Buffer.alloc(B, 0x61), seq()));
    assert.ok(scratch.writeBehind.bytes > 0, 'the write is still in the write-behind');
    fileEnd = TiB;
    await check(8 * MiB + 4 * B, TiB, TiB - B, 'a dirty write a terabyte away');
    await check(TiB, 2 * TiB, 3 * TiB, 'past the last write');

    // A volume this replica holds no file of is one hole.
    assert.equal(await store.nextData(2, 0, TiB), TiB);
    assert.equal(await store.nextData(2, 5 * MiB, B), 5 * MiB + B);
  });
}

test('(fs backend as openBlockIo makes it where io_uring is refused) nextData sees a write still in the page cache, never a hole', async (t) => {
  const dir = tempDir(t);
  // The production wiring: the addon tells holes only on a file system trusted with them.
  const trusted = await holesTrusted(dir);
  const io = await openBlockIo({ backend: 'fs', probeDir: dir });
  t.after(() => io.close());
  const scratch = new ScratchPool(io, { flushDelayMs: 60_000 });
  const store = await PgStore.open(io, scratch, dir, 7);
  t.after(() => store.close());
  // Buffered writes, never synced: the flush before the answer puts them in the page cache only.
  await store.apply(1, 1, encodeWrite(1, 8 * MiB, Buffer.alloc(B, 0x5a), { session: 1, seq: 1 }));
  await store.apply(2, 1, encodeWrite(1, TiB - B, Buffer.alloc(B, 0x61), { session: 1, seq: 2 }));
  // Untrusted, every byte below the file's end is data: each answer is its range's start.
  assert.equal(await store.nextData(1, 0, 16 * MiB), trusted ? 8 * MiB : 0, 'a hole ended by data');
  assert.equal(await store.nextData(1, 8 * MiB + B, TiB), trusted ? TiB - B : 8 * MiB + B, 'a hole a terabyte long, ended by a write the file system has not written back');
  assert.equal(await store.nextData(1, TiB, MiB), TiB + MiB, 'past the last write');
});
