/**
 * A shrink's discard-from is durable once it returns: SpannedFile.discardFrom cuts each data
 * file at the offset and fsyncs every file it changed, and PgStore's checkpoint after the
 * apply (an fdatasync of each file) relies on that fsync for the truncate that keeps a file's
 * size (it frees the blocks allocated past the end; fdatasync may leave it in the journal).
 * Over the power-cut model (src/io/powercut.ts), which undoes at a cut any truncate not made
 * durable: the power goes right after the discard (or the checkpoint after it), the files are
 * reopened on the real disk, and every byte past the offset reads as zeros (and, on uring, as
 * a hole). Without the fsync the cut brings the bytes back (every test here); with an
 * fdatasync in its place the bytes stay cut, and only the uring PgStore test, which looks at
 * allocation, sees the blocks the same-size truncate freed come back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PowerCutIo, seededRandom } from '../../src/io/powercut.js';
import { testBackends } from '../../src/io/testing.js';
import { type BlockIo, ExtentKind } from '../../src/io/types.js';
import { encodeDiscardFrom, encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { dataFileSpanBytes, SpannedFile } from '../../src/store/spanned-file.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const MiB = 2 ** 20;

/** The cut's draws: one that undoes every unsynced change (the harshest disk), then seeded ones. */
const draws: [string, () => () => number][] = [
  ['every unsynced change undone', () => () => 0.9],
  ...[1, 2, 3, 4].map((seed): [string, () => () => number] => [`seed ${seed}`, () => seededRandom(seed)]),
];

for (const backend of testBackends()) {
  test(`(${backend.name}) a power cut right after SpannedFile.discardFrom returns leaves every byte past the offset zero and every byte below intact`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const o = MiB;
    /** [offset, fill] of blocks written and made durable before the discard. */
    const blocks: [number, number][] = [
      [0, 0x11],
      [o - B, 0x12], // just below
      [o, 0x13], // just at
      [o + 7 * B, 0x14],
      [2 * MiB, 0x15],
    ];
    // On uring (which reads back only allocated ranges) also a first file 16 TiB long, and a
    // later file: the model reads every byte of a file the fs backend calls data.
    if (backend.name === 'uring') blocks.push([dataFileSpanBytes - B, 0x16], [dataFileSpanBytes + 3 * B, 0x17]);
    for (const [what, random] of draws) {
      const dir = tempDir(t);
      const cut = new PowerCutIo(inner, random());
      const f = await SpannedFile.open(cut, dir, 1, true);
      const buf = cut.allocAligned(B);
      for (const [at, fill] of blocks) {
        buf.fill(fill);
        await f.pwrite(buf, at);
      }
      await f.fdatasync(); // as a checkpoint does
      await f.discardFrom(o);
      const r = await cut.powerCut();
      assert.equal(r.rolledBackWrites, 0, `${what}: nothing but the discard was unsynced`);

      const g = await SpannedFile.open(inner, dir, 1, false);
      try {
        for (const [at, fill] of blocks) {
          buf.fill(0xee);
          const n = await g.pread(buf, at);
          buf.fill(0, n);
          const want = at < o ? fill : 0;
          assert.ok(buf.every((x) => x === want), `${what}: the block at ${at} (discard from ${o}) reads ${want}, got ${buf[0]}`);
        }
        const end = 2 * dataFileSpanBytes;
        assert.deepEqual([...(await g.extentMap(o, end, 16))], [o, end, ExtentKind.Hole], `${what}: past the offset, one hole`);
      } finally {
        await g.close();
      }
    }
  });
}

test('(uring) a power cut after the checkpoint that follows a discard-from apply finds no block allocated past the offset', { skip: testBackends()[0].skip }, async (t) => {
  // The checkpoint fdatasyncs each data file; the truncate at a file's size that frees what a
  // NO_HOLE zero allocated past its end is made durable only by discardFrom's fsync.
  const inner = testBackends()[0].make();
  t.after(() => inner.close());
  const o = MiB;
  for (const [what, random] of draws) {
    const dir = tempDir(t);
    const cut = new PowerCutIo(inner, random());
    const open = (io: BlockIo): Promise<PgStore> => PgStore.open(io, new ScratchPool(io, { flushDelayMs: 3_600_000 }), dir, 7);
    const store = await open(cut);
    let index = 0;
    await store.apply(++index, 1, encodeWrite(1, 0, Buffer.alloc(B, 0x41), { session: 1, seq: index }));
    // Past the end of the file's data (the size kept): allocated zeros past the offset. The file
    // ends below the offset, so the discard extends it to the offset and truncates it there.
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, o + 8 * B, 2 * B, { session: 1, seq: index }));
    await store.checkpoint();
    await store.apply(++index, 1, encodeDiscardFrom(1, o, { session: 2, seq: index }));
    assert.equal(await store.checkpoint(), index);
    await cut.powerCut();

    const reopened = await open(inner);
    try {
      assert.equal(reopened.appliedIndex, index, `${what}: the discard is in the checkpoint`);
      const out = Buffer.alloc(B);
      await reopened.read(1, 0, B, out);
      assert.ok(out.every((x) => x === 0x41), `${what}: the block below the offset is intact`);
      await reopened.read(1, o + 8 * B, B, out);
      assert.ok(out.every((x) => x === 0), `${what}: past the offset, zeros`);
      assert.deepEqual(await reopened.blockStatus(1, o, 16 * B), [{ length: 16 * B, hole: true, zero: true }], `${what}: past the offset, one hole`);
    } finally {
      await reopened.close();
    }
  }
});
