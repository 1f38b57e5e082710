/**
 * A shrink discarded the data past a volume's new end with one TRIM command per extent: a
 * 1 PiB volume shrunk to 1 GiB made 2^28 pieces in one node's memory (and as many log entries).
 * It now sends one discard-from command per PG (op 5), and a replica applying it makes every
 * byte of the volume at or past the offset a hole, whatever the range: its dirty blocks there
 * are dropped and each data file is cut. Real stores on a real disk, on each backend: blocks
 * below the offset, at it, past 16 TiB, past 256 TiB, across a file boundary, some still dirty
 * in the write-behind; reads, block status and images show holes past the offset and the data
 * below intact; a replay (the store reopened from its checkpoint) and a second apply change
 * nothing; the range past the offset takes writes again. The codec round-trips the command and
 * refuses a malformed one, as the gateway refuses a malformed request.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackends } from '../../src/io/testing.js';
import type { BlockIo } from '../../src/io/types.js';
import { decodeOp, encodeDiscardFrom, encodeRange, encodeWrite, opHeaderBytes, OpKind } from '../../src/store/ops.js';
import { dataFileSpanBytes } from '../../src/store/spanned-file.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { checkPgRequest } from '../../src/gateway/volume-backend.js';
import { Corruption, InvalidArgument } from '../../src/common/errors.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const GiB = 2 ** 30;
const TiB = 2 ** 40;
const PiB = 2 ** 50;

test('a discard-from command round-trips, names offsets past 256 TiB, and a malformed one is refused', () => {
  const id = { session: 7, seq: 11 };
  for (const offset of [0, GiB, dataFileSpanBytes, 2 ** 48 - B, 2 ** 48, 300 * TiB, PiB - B]) {
    const op = decodeOp(encodeDiscardFrom(9, offset, id));
    assert.deepEqual(op, { kind: OpKind.DiscardFrom, volumeId: 9, offset, length: 0, data: undefined, requestKey: 7 * 2 ** 32 + 11 });
  }
  assert.equal(encodeDiscardFrom(1, 300 * TiB, id)[0], OpKind.DiscardFrom | 0x80, 'past 256 TiB the op byte carries the far-offset flag');
  assert.equal(encodeDiscardFrom(1, GiB, id)[0], OpKind.DiscardFrom);
  assert.throws(() => encodeDiscardFrom(1, GiB + 512, id), RangeError, 'an unaligned offset is never written');

  const malformed = (what: string, edit: (b: Buffer) => Buffer): void => {
    const b = edit(Buffer.from(encodeDiscardFrom(1, 300 * TiB, id)));
    assert.throws(() => decodeOp(b), Corruption, what);
  };
  malformed('a length', (b) => (b.writeUInt32BE(B, 12), b));
  malformed('an unaligned offset', (b) => (b.writeUIntBE(b.readUIntBE(6, 6) + 512, 6, 6), b));
  malformed('a payload', (b) => Buffer.concat([b, Buffer.alloc(B)]));
  malformed('the far-offset flag cleared', (b) => ((b[0] = OpKind.DiscardFrom), b));
  malformed('an op past the last known', (b) => ((b[0] = (OpKind.DiscardFrom + 1) | 0x80), b));
  assert.equal(encodeDiscardFrom(1, 0, id).length, opHeaderBytes);

  // The PG request that proposes it: a volume, an aligned offset and a request id.
  assert.deepEqual(checkPgRequest({ k: 'discardFrom', v: 3, o: GiB, s: 7, q: 11 }), { k: 'discardFrom', v: 3, o: GiB, s: 7, q: 11 });
  assert.deepEqual(checkPgRequest({ k: 'discardFrom', v: 3, o: GiB, s: 7, q: 11, nb: 5 }), { k: 'discardFrom', v: 3, o: GiB, s: 7, q: 11, nb: 5 });
  for (const bad of [
    { k: 'discardFrom', v: 3, o: GiB },
    { k: 'discardFrom', v: 3, o: GiB + 512, s: 7, q: 11 },
    { k: 'discardFrom', v: 3, o: -B, s: 7, q: 11 },
    { k: 'discardFrom', v: 3, o: 2 * PiB, s: 7, q: 11 },
    { k: 'discardFrom', v: 0, o: GiB, s: 7, q: 11 },
    { k: 'discardFrom', v: 3, o: GiB, s: -1, q: 11 },
    { k: 'discardFrom', v: 3, o: GiB, s: 7, q: 11, nb: -5 },
  ]) {
    assert.throws(() => checkPgRequest(bad), InvalidArgument, JSON.stringify(bad));
  }
  // A shrink's trim past the end from a node of the build before discards (a rolling upgrade).
  const pastEnd = { k: 'trim', v: 3, o: GiB, l: B, s: 7, q: 12, pastEnd: true };
  assert.deepEqual(checkPgRequest(pastEnd), pastEnd);
  for (const bad of [{ ...pastEnd, pastEnd: 1 }, { ...pastEnd, k: 'zero' }]) assert.throws(() => checkPgRequest(bad), InvalidArgument, JSON.stringify(bad));
});

/** Where the discard starts: 1 GiB (in the first file), a file boundary, inside a later file. */
const discardOffsets = [GiB, dataFileSpanBytes, 17 * TiB];

/** [offset, bytes, fill] written and checkpointed (on disk) before the discard, around `o`. */
function flushedWrites(o: number): [number, number, number][] {
  return [
    [0, B, 0x11],
    [o - B, B, 0x12], // just below
    [o, B, 0x13], // just at
    [o + 5 * B, 3 * B, 0x14],
    [17 * TiB - 2 * B, 2 * B, 0x15], // past 16 TiB, below or at o = 17 TiB
    [17 * TiB + 9 * B, B, 0x16],
    [dataFileSpanBytes - B, 2 * B, 0x17], // across the first file boundary
    [300 * TiB, B, 0x18], // past 256 TiB
    [PiB - B, B, 0x19], // the last block of a 1 PiB volume
  ];
}

/** Written after the checkpoint and still dirty (the flush timer never fires) at the discard. */
function dirtyWrites(o: number): [number, number, number][] {
  return [
    [B, B, 0x21],
    [o - 2 * B, B, 0x22],
    [o, B, 0x23], // over a flushed block, dirty
    [o + B, B, 0x24],
    [3 * dataFileSpanBytes + 3 * B, B, 0x25],
    [500 * TiB, B, 0x26], // in a span whose file was never made
  ];
}

async function readBack(store: PgStore, volumeId: number, offset: number, bytes: number): Promise<Buffer> {
  const out = Buffer.alloc(bytes, 0xee);
  await store.read(volumeId, offset, bytes, out);
  return out;
}

/** Every block of the writes reads its newest byte below `o`, zeros (and, `allHoles`, holes) at or past it. */
async function assertDiscarded(store: PgStore, o: number, writes: [number, number, number][], what: string, allHoles = true): Promise<void> {
  const newest = new Map<number, number>();
  for (const [offset, bytes, fill] of writes) for (let at = offset; at < offset + bytes; at += B) newest.set(at, fill);
  for (const [at, fill] of newest) {
    const got = await readBack(store, 1, at, B);
    const want = at < o ? fill : 0;
    assert.ok(got.every((b) => b === want), `${what}: the block at ${at} (discard from ${o}) reads ${want}, got ${got[0]}`);
    // (Once the range is written again, the fs backend without the addon, which tells no holes,
    // calls it data.)
    if (at >= o && allHoles) assert.deepEqual(await store.blockStatus(1, at, B), [{ length: B, hole: true, zero: true }], `${what}: a hole at ${at}`);
  }
  if (!allHoles) return;
  // Everything from the offset to the end of a 1 PiB volume: holes (one extent, or one per file).
  const past = await store.blockStatus(1, o, PiB - o);
  assert.ok(past.length > 0 && past.every((e) => e.hole && e.zero), `${what}: every extent past ${o} is a hole: ${JSON.stringify(past)}`);
  assert.equal(past.reduce((n, e) => n + e.length, 0), PiB - o);
}

async function openStore(io: BlockIo, dir: string): Promise<{ store: PgStore; pool: ScratchPool }> {
  // No flush round before the test asks for one: the dirty writes stay dirty until the discard.
  const pool = new ScratchPool(io, { flushDelayMs: 3_600_000 });
  return { store: await PgStore.open(io, pool, dir, 7), pool };
}

for (const backend of testBackends()) {
  for (const o of discardOffsets) {
    test(`(${backend.name}) a discard from ${o} makes every byte past it a hole, keeps every byte below, and is harmless to replay`, { skip: backend.skip }, async (t) => {
      const io = backend.make();
      t.after(() => io.close());
      const dir = tempDir(t);
      let { store, pool } = await openStore(io, dir);
      const log: Buffer[] = [];
      const apply = async (cmd: Buffer): Promise<void> => {
        log.push(cmd);
        await store.apply(log.length, 1, cmd);
      };
      let seq = 0;
      for (const [offset, bytes, fill] of flushedWrites(o)) await apply(encodeWrite(1, offset, Buffer.alloc(bytes, fill), { session: 1, seq: ++seq }));
      // Allocated zeros (a NO_HOLE zero) past the offset, and past the end of the file's data.
      await apply(encodeRange(OpKind.ZeroNoHole, 1, o + 64 * B, 4 * B, { session: 1, seq: ++seq }));
      await apply(encodeRange(OpKind.ZeroNoHole, 1, 301 * TiB, 4 * B, { session: 1, seq: ++seq }));
      assert.equal(await store.checkpoint(), log.length);
      const checkpointed = log.length;
      for (const [offset, bytes, fill] of dirtyWrites(o)) await apply(encodeWrite(1, offset, Buffer.alloc(bytes, fill), { session: 1, seq: ++seq }));
      assert.equal(pool.writeBehind.bytes, dirtyWrites(o).length * B, 'the later writes are still dirty');

      const discard = encodeDiscardFrom(1, o, { session: 2, seq: 1 });
      await apply(discard);
      const dirtyBelow = dirtyWrites(o).filter(([offset]) => offset < o).length;
      assert.equal(pool.writeBehind.bytes, dirtyBelow * B, 'the dirty blocks past the offset are dropped, those below kept');
      const all = [...flushedWrites(o), ...dirtyWrites(o)];
      await assertDiscarded(store, o, all, 'applied');

      if (backend.name === 'uring') {
        // An image (what a rebuilt replica, and a digest, read) holds nothing past the offset.
        let chunk = await store.imageChunk(null, 1024 * 1024);
        const ends: number[] = [];
        for (;;) {
          for (const [, at, data] of chunk.runs) ends.push(at + data.byteLength);
          for (const [, at, length] of chunk.zeros ?? []) ends.push(at + length);
          if (chunk.next === null) break;
          chunk = await store.imageChunk(chunk.next, 1024 * 1024, undefined, chunk.image);
        }
        assert.ok(ends.length > 0 && ends.every((end) => end <= o), `the image ends at or below ${o}: ${ends.join(', ')}`);
      }

      // A crash before the next checkpoint: reopened at the checkpoint, the log replayed (the
      // dirty writes, then the discard) lands where the first apply did.
      await store.close();
      ({ store, pool } = await openStore(io, dir));
      assert.equal(store.appliedIndex, checkpointed);
      for (let i = checkpointed; i < log.length; i++) await store.apply(i + 1, 1, log[i]);
      await assertDiscarded(store, o, all, 'replayed');
      // The same command again (a retry that committed twice): nothing changes.
      await apply(discard);
      await store.checkpoint();
      await store.close();
      ({ store, pool } = await openStore(io, dir));
      await assertDiscarded(store, o, all, 'applied twice, checkpointed and reopened');

      // The volume grown again: the range past the offset takes writes, in files cut to nothing too.
      const regrown: [number, number, number][] = [
        [o + B, B, 0x31],
        [300 * TiB, B, 0x32],
        [PiB - B, B, 0x33],
      ];
      for (const [offset, bytes, fill] of regrown) await apply(encodeWrite(1, offset, Buffer.alloc(bytes, fill), { session: 1, seq: ++seq }));
      await store.checkpoint();
      await store.close();
      ({ store, pool } = await openStore(io, dir));
      t.after(() => store.close());
      for (const [offset, bytes, fill] of regrown) assert.ok((await readBack(store, 1, offset, bytes)).every((b) => b === fill), `rewritten at ${offset}`);
      const rewritten = new Set(regrown.map(([offset]) => offset));
      await assertDiscarded(
        store,
        o,
        all.filter(([offset]) => !rewritten.has(offset)),
        'the other blocks, once the range is written again',
        false,
      );
    });
  }

  test(`(${backend.name}) a discard leaves allocated zeros below the offset past a file's end, and drops those past it`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    const { store } = await openStore(io, dir);
    t.after(() => store.close());
    const o = GiB;
    let index = 0;
    await store.apply(++index, 1, encodeWrite(1, 0, Buffer.alloc(B, 0x41), { session: 1, seq: index }));
    // Both past the end of the file's data (a NO_HOLE zero keeps its size): one below, one past.
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, o - 8 * B, 2 * B, { session: 1, seq: index }));
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, o + 8 * B, 2 * B, { session: 1, seq: index }));
    await store.checkpoint();
    for (const what of ['applied', 'applied again']) {
      await store.apply(++index, 1, encodeDiscardFrom(1, o, { session: 2, seq: index }));
      assert.ok((await readBack(store, 1, 0, B)).every((b) => b === 0x41));
      assert.deepEqual(await store.blockStatus(1, o + 8 * B, 2 * B), [{ length: 2 * B, hole: true, zero: true }], `${what}: past the offset, a hole`);
      const below = await store.blockStatus(1, o - 8 * B, 2 * B);
      // The fs backend wrote those zeros (it has no fallocate): data to it, as before the discard.
      assert.deepEqual(below, [{ length: 2 * B, hole: false, zero: backend.name === 'uring' }], `${what}: below the offset, still allocated`);
      assert.ok((await readBack(store, 1, o - 8 * B, 2 * B)).every((b) => b === 0));
    }
  });
}

test('a replica rebuilt from an image taken after a discard and the writes past it keeps those writes when it replays the log', async (t) => {
  // The image is read after the Raft snapshot's index: it holds the discard's effect and the
  // write that came after it (the volume grown back), and the request keys of both. The
  // rebuilt replica replays the log from the snapshot's index and skips what those keys name.
  // A keyless discard was applied again there, over the later write: the replicas differed.
  const io = testBackends()[0].skip ? testBackends()[1].make() : testBackends()[0].make();
  t.after(() => io.close());
  const open = (): Promise<PgStore> => PgStore.open(io, new ScratchPool(io), tempDir(t), 7);
  const source = await open();
  t.after(() => source.close());
  const log = [
    encodeWrite(1, 2 * GiB, Buffer.alloc(B, 0x11), { session: 1, seq: 1 }),
    encodeDiscardFrom(1, GiB, { session: 2, seq: 1 }),
    encodeWrite(1, 2 * GiB, Buffer.alloc(B, 0x22), { session: 1, seq: 2 }),
  ];
  for (let i = 0; i < log.length; i++) await source.apply(i + 1, 1, log[i]);
  const snapshotIndex = 1;
  const image = await source.snapshotImage(snapshotIndex);
  const rebuilt = await open();
  t.after(() => rebuilt.close());
  await rebuilt.restoreImage(image, snapshotIndex, 1);
  for (let i = snapshotIndex; i < log.length; i++) await rebuilt.apply(i + 1, 1, log[i]);
  assert.ok((await readBack(source, 1, 2 * GiB, B)).every((b) => b === 0x22));
  assert.ok((await readBack(rebuilt, 1, 2 * GiB, B)).every((b) => b === 0x22), 'the rebuilt replica lost the write after the discard');
});
