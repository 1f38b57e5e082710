/**
 * BLOCK_STATUS of a PG replica after WRITE_ZEROES: with NO_HOLE the client asked for the range
 * to stay allocated, and the store keeps it so (FALLOC_FL_ZERO_RANGE, unwritten extents); it
 * reports that range as allocated zeros (NBD_STATE_ZERO without NBD_STATE_HOLE), not as a hole,
 * although SEEK_DATA counts unwritten extents as holes. Without NO_HOLE the range is punched
 * and reported as a hole. Across a restart too: the answer comes from the file system, not
 * from memory. On the fs backend without the addon, which tells no holes, everything written
 * reads as data.
 *
 * Real PG stores on a real disk, on each backend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackends } from '../../src/io/testing.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const KiB = 1024;
const B = 4 * KiB;

for (const backend of testBackends()) {
  test(`(${backend.name}) a NO_HOLE zero is reported as allocated zeros, a punched zero as a hole, after a restart too`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    let store = await openStore(io, dir);
    // 64 KiB written, then blocks 4-7 zeroed keeping them allocated, blocks 10-11 zeroed with a
    // hole allowed; and 8 KiB past the written end zeroed with NO_HOLE (KEEP_SIZE: past EOF).
    await store.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(16 * B, 0x5a), { session: 1, seq: 1 }));
    await store.apply(2, 1, encodeRange(OpKind.ZeroNoHole, 1, 4 * B, 4 * B, { session: 1, seq: 2 }));
    await store.apply(3, 1, encodeRange(OpKind.Zero, 1, 10 * B, 2 * B, { session: 1, seq: 3 }));
    await store.apply(4, 1, encodeRange(OpKind.ZeroNoHole, 1, 20 * B, 2 * B, { session: 1, seq: 4 }));

    const expected =
      backend.name === 'uring'
        ? [
            { length: 4 * B, hole: false, zero: false },
            { length: 4 * B, hole: false, zero: true },
            { length: 2 * B, hole: false, zero: false },
            { length: 2 * B, hole: true, zero: true },
            { length: 4 * B, hole: false, zero: false },
            { length: 4 * B, hole: true, zero: true },
            { length: 2 * B, hole: false, zero: true },
            { length: 10 * B, hole: true, zero: true },
          ]
        : // The fs backend writes zeros for both and reports what the file holds as data.
          [
            { length: 22 * B, hole: false, zero: false },
            { length: 10 * B, hole: true, zero: true },
          ];
    assert.deepEqual(await store.blockStatus(1, 0, 32 * B), expected);
    // The zeros read back as zeros whatever the allocation.
    const back = Buffer.alloc(32 * B, 0xee);
    await store.read(1, 0, 32 * B, back);
    for (const [from, to, byte] of [[0, 4, 0x5a], [4, 8, 0], [8, 10, 0x5a], [10, 12, 0], [12, 16, 0x5a], [16, 32, 0]] as const) {
      assert.ok(back.subarray(from * B, to * B).every((b) => b === byte), `blocks ${from}-${to} read as 0x${byte.toString(16)}`);
    }

    await store.checkpoint();
    await store.close();
    store = await openStore(io, dir);
    t.after(() => store.close());
    assert.deepEqual(await store.blockStatus(1, 0, 32 * B), expected, 'after a restart');
    // A range asked inside the zeroed one: clipped to it.
    assert.deepEqual(await store.blockStatus(1, 5 * B, 2 * B), [{ length: 2 * B, hole: false, zero: backend.name === 'uring' }]);
  });
}
