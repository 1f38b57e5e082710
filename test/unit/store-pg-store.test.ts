import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FsBlockIo } from '../../src/io/fs.js';
import { PgStore, ScratchPool, type ImageChunk, type ImageCursor } from '../../src/store/pg-store.js';
import type { BlockFile, BlockIo, OpenFileOptions } from '../../src/io/types.js';
import { decodeOp, encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { Corruption } from '../../src/common/errors.js';
import { tempDir } from '../helpers/tools.js';

async function openStore(dir: string): Promise<PgStore> {
  const io = new FsBlockIo();
  return PgStore.open(io, new ScratchPool(io), dir, 7);
}

async function readAll(s: PgStore, vol: number, off: number, len: number): Promise<Buffer> {
  const out = Buffer.alloc(len, 0xee);
  await s.read(vol, off, len, out);
  return out;
}

test('store ops round-trip and refuse malformed commands', () => {
  const data = randomBytes(5000);
  const w = decodeOp(encodeWrite(3, 123456789, data));
  assert.equal(w.kind, OpKind.Write);
  assert.equal(w.volumeId, 3);
  assert.equal(w.offset, 123456789);
  assert.deepEqual(Buffer.from(w.data!), data);
  const t = decodeOp(encodeRange(OpKind.Trim, 1, 8192, 1 << 20));
  assert.equal(t.length, 1 << 20);
  assert.equal(t.data, undefined);
  assert.throws(() => decodeOp(new Uint8Array(3)), Corruption);
  const bad = encodeWrite(1, 0, data);
  assert.throws(() => decodeOp(bad.subarray(0, bad.length - 1)), Corruption);
});

test('applied writes (aligned and unaligned) read back, never-written ranges read as zeros', async (t) => {
  const s = await openStore(tempDir(t));
  const a = randomBytes(8192);
  await s.apply(1, 1, encodeWrite(1, 4096, a));
  const b = randomBytes(1000);
  await s.apply(2, 1, encodeWrite(1, 4096 + 100, b)); // inside a block: read-modify-write
  const c = randomBytes(5000);
  await s.apply(3, 1, encodeWrite(1, 4096 * 3 - 10, c)); // spans blocks, beyond the old end
  await s.apply(4, 1, new Uint8Array(0)); // leader no-op
  const expect = Buffer.alloc(4096 * 6);
  a.copy(expect, 4096);
  b.copy(expect, 4096 + 100);
  c.copy(expect, 4096 * 3 - 10);
  assert.deepEqual(await readAll(s, 1, 0, expect.length), expect);
  assert.deepEqual(await readAll(s, 1, 4096 + 50, 3000), expect.subarray(4096 + 50, 4096 + 3050));
  assert.deepEqual(await readAll(s, 2, 0, 4096), Buffer.alloc(4096)); // other volume: nothing
  assert.equal(s.appliedIndex, 4);
  // Re-applying an index already applied (replay after restart) changes nothing.
  await s.apply(2, 1, encodeWrite(1, 0, Buffer.alloc(10, 1)));
  assert.deepEqual(await readAll(s, 1, 0, 10), Buffer.alloc(10));
  await s.close();
});

test('trim and write-zeroes ranges zero the bytes, including partial blocks', async (t) => {
  const s = await openStore(tempDir(t));
  const a = randomBytes(4096 * 8);
  await s.apply(1, 1, encodeWrite(5, 0, a));
  await s.apply(2, 1, encodeRange(OpKind.Trim, 5, 4096 + 100, 4096 * 2));
  await s.apply(3, 1, encodeRange(OpKind.ZeroNoHole, 5, 4096 * 5, 4096));
  await s.apply(4, 1, encodeRange(OpKind.Zero, 5, 4096 * 7 + 1, 10));
  const expect = Buffer.from(a);
  expect.fill(0, 4096 + 100, 4096 * 3 + 100);
  expect.fill(0, 4096 * 5, 4096 * 6);
  expect.fill(0, 4096 * 7 + 1, 4096 * 7 + 11);
  assert.deepEqual(await readAll(s, 5, 0, expect.length), expect);
  const status = await s.blockStatus(9, 0, 1 << 20);
  assert.deepEqual(status, [{ length: 1 << 20, hole: true, zero: true }]);
  const covered = (await s.blockStatus(5, 0, 4096 * 8)).reduce((n, e) => n + e.length, 0);
  assert.equal(covered, 4096 * 8);
  await s.close();
});

test('checkpoint persists the applied index; a restarted store resumes from it', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(dir);
  const a = randomBytes(4096 * 3);
  await s.apply(1, 2, encodeWrite(1, 0, a));
  await s.apply(2, 2, encodeWrite(1, 1 << 20, a));
  assert.equal(s.durableIndex, 0);
  assert.equal(await s.checkpoint(), 2);
  await s.apply(3, 3, encodeRange(OpKind.Trim, 1, 0, 4096));
  await s.close();
  const r = await openStore(dir);
  assert.equal(r.appliedIndex, 2);
  assert.equal(r.appliedTerm, 2);
  // Entry 3 was not checkpointed: the WAL replays it, and it applies again.
  await r.apply(3, 3, encodeRange(OpKind.Trim, 1, 0, 4096));
  const expect = Buffer.from(a);
  expect.fill(0, 0, 4096);
  assert.deepEqual(await readAll(r, 1, 0, a.length), expect);
  await r.close();
});

test('a snapshot image restores the same bytes in another replica', async (t) => {
  const src = await openStore(tempDir(t));
  const blocks = [0, 3, 17, 300];
  for (const [i, b] of blocks.entries()) await src.apply(i + 1, 1, encodeWrite(2, b * 4096, Buffer.alloc(4096, i + 1)));
  await src.apply(5, 1, encodeWrite(4, 12345, Buffer.from('hello')));
  const image = await src.snapshotImage();
  const dstDir = tempDir(t);
  const dst = await openStore(dstDir);
  await dst.apply(1, 1, encodeWrite(2, 4096 * 50, Buffer.alloc(4096, 9))); // stale data to be replaced
  await dst.restoreImage(image, 5, 1);
  assert.equal(dst.appliedIndex, 5);
  assert.equal(dst.durableIndex, 5);
  for (const vol of [2, 4]) {
    assert.deepEqual(await readAll(dst, vol, 0, 4096 * 301), await readAll(src, vol, 0, 4096 * 301));
  }
  await dst.close();
  const again = await openStore(dstDir);
  assert.equal(again.appliedIndex, 5);
  await again.close();
  await src.close();
});

test('a retried request (same session and sequence) applies once, across checkpoint, restart and snapshot', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(dir);
  const id = { session: 77, seq: 4_000_000_000 };
  await s.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0xaa), id)); // first attempt commits
  await s.apply(2, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0xbb), { session: 77, seq: 5 })); // a newer write
  await s.apply(3, 2, encodeWrite(1, 0, Buffer.alloc(4096, 0xaa), id)); // the retry also commits
  assert.deepEqual(await readAll(s, 1, 0, 4096), Buffer.alloc(4096, 0xbb), 'the retry did not undo the newer write');
  assert.equal(s.appliedIndex, 3);
  await s.apply(4, 2, encodeRange(OpKind.Trim, 1, 0, 4096, { session: 78, seq: 1 }));
  await s.checkpoint();
  await s.apply(5, 2, encodeWrite(1, 0, Buffer.alloc(4096, 0xcc), { session: 79, seq: 1 }));
  await s.close();
  const r = await openStore(dir);
  // After a restart the table is back: a late copy of the trim is skipped.
  await r.apply(5, 2, encodeWrite(1, 0, Buffer.alloc(4096, 0xcc), { session: 79, seq: 1 }));
  await r.apply(6, 2, encodeRange(OpKind.Trim, 1, 0, 4096, { session: 78, seq: 1 }));
  assert.deepEqual(await readAll(r, 1, 0, 4096), Buffer.alloc(4096, 0xcc));
  // And a replica restored from this one's snapshot skips it too.
  const other = await openStore(tempDir(t));
  await other.restoreImage(await r.snapshotImage(), 6, 2);
  await other.apply(7, 3, encodeWrite(1, 0, Buffer.alloc(4096, 0xbb), { session: 77, seq: 5 }));
  assert.deepEqual(await readAll(other, 1, 0, 4096), Buffer.alloc(4096, 0xcc));
  await other.close();
  await r.close();
});

test('a snapshot streamed in small chunks restores the same bytes and dedupe table', async (t) => {
  const src = await openStore(tempDir(t));
  let idx = 0;
  for (const vol of [3, 1, 7]) {
    for (const b of [0, 1, 2, 40, 41, 300]) await src.apply(++idx, 1, encodeWrite(vol, b * 4096, Buffer.alloc(4096, (vol * 16 + b) & 0xff), { session: 9, seq: idx }));
  }
  const dst = await openStore(tempDir(t));
  await dst.apply(1, 1, encodeWrite(5, 0, Buffer.alloc(4096, 1))); // to be replaced
  await dst.beginRestore();
  let cursor = null;
  let chunks = 0;
  do {
    const chunk = await src.imageChunk(cursor, 8192);
    assert.ok(chunk.runs.reduce((n, r) => n + r[2].length, 0) <= 8192 + 1024 * 1024);
    await dst.restoreChunk(chunk);
    cursor = chunk.next;
    chunks++;
  } while (cursor !== null);
  await dst.finishRestore(idx, 1);
  assert.ok(chunks > 3, `streamed in ${chunks} chunks`);
  for (const vol of [1, 3, 5, 7]) assert.deepEqual(await readAll(dst, vol, 0, 4096 * 301), await readAll(src, vol, 0, 4096 * 301));
  // The dedupe table came along: a late duplicate of an applied request is skipped.
  await dst.apply(idx + 1, 2, encodeWrite(1, 0, Buffer.alloc(4096, 0xee), { session: 9, seq: 7 }));
  assert.deepEqual(await readAll(dst, 1, 0, 4096), await readAll(src, 1, 0, 4096));
  assert.equal(dst.durableIndex, idx);
  await dst.close();
  await src.close();
});

/** A BlockIo whose next open() waits, once held, until the test releases it (a slow open). */
class HeldOpenIo implements BlockIo {
  readonly kind: BlockIo['kind'];
  readonly alignmentBytes: number;
  private held: { entered: () => void; gate: Promise<void>; afterOpen: boolean } | undefined;
  constructor(private readonly inner: BlockIo) {
    this.kind = inner.kind;
    this.alignmentBytes = inner.alignmentBytes;
  }
  /**
   * Holds the next open(): `entered` settles once it waits, `release` lets it go on. With
   * `afterOpen`, the file is opened first and only the answer is held (the open itself is
   * done: a slow answer, as from a busy thread pool).
   */
  holdNextOpen(afterOpen = false): { entered: Promise<void>; release: () => void } {
    let entered!: () => void;
    let release!: () => void;
    const enteredP = new Promise<void>((r) => (entered = r));
    const gate = new Promise<void>((r) => (release = r));
    this.held = { entered, gate, afterOpen };
    return { entered: enteredP, release };
  }
  async open(path: string, options?: OpenFileOptions): Promise<BlockFile> {
    const h = this.held;
    if (!h) return this.inner.open(path, options);
    this.held = undefined;
    const opened = h.afterOpen ? await this.inner.open(path, options) : undefined;
    h.entered();
    await h.gate;
    return opened ?? this.inner.open(path, options);
  }
  allocAligned(lengthBytes: number): Buffer {
    return this.inner.allocAligned(lengthBytes);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

test('a checkpoint or image taken while an apply waits for I/O holds neither its request key nor a claim to its data: a replay applies it', async (t) => {
  const dir = tempDir(t);
  const io = new HeldOpenIo(new FsBlockIo());
  const s = await PgStore.open(io, new ScratchPool(io), dir, 7);
  await s.apply(1, 1, encodeWrite(2, 0, Buffer.alloc(4096, 0x11), { session: 5, seq: 1 }));
  // Entry 2 writes a volume whose file is not open yet: its apply waits in open().
  const entry2 = encodeWrite(1, 0, Buffer.alloc(4096, 0x22), { session: 5, seq: 2 });
  const held = io.holdNextOpen();
  const applying = s.apply(2, 1, entry2);
  await held.entered;
  assert.equal(s.appliedIndex, 1);
  assert.equal(await s.checkpoint(), 1);
  // An image for a snapshot at 1, taken in the same gap, streamed into another replica.
  const dst = await openStore(tempDir(t));
  await dst.beginRestore();
  for (let cursor: ImageCursor | null = null, first = true; first || cursor !== null; first = false) {
    const chunk: ImageChunk = await s.imageChunk(cursor, 1 << 20, first ? 1 : undefined);
    await dst.restoreChunk(chunk);
    cursor = chunk.next;
  }
  await dst.finishRestore(1, 1);
  // A crash now: the store restarts from its checkpoint, and the WAL replays entry 2.
  const r = await openStore(dir);
  assert.equal(r.appliedIndex, 1);
  await r.apply(2, 1, entry2);
  assert.deepEqual(await readAll(r, 1, 0, 4096), Buffer.alloc(4096, 0x22), 'the replayed write was skipped as a duplicate');
  // The replica restored at 1 replays entry 2 from the log as well.
  await dst.apply(2, 1, entry2);
  assert.deepEqual(await readAll(dst, 1, 0, 4096), Buffer.alloc(4096, 0x22), 'the restored replica skipped the write as a duplicate');
  // Once applied, the key is remembered: a retry's copy changes nothing.
  await r.apply(3, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0x33)));
  await r.apply(4, 2, entry2);
  assert.deepEqual(await readAll(r, 1, 0, 4096), Buffer.alloc(4096, 0x33));
  await r.close();
  await dst.close();
  held.release();
  await applying;
  assert.equal(s.appliedIndex, 2);
  await s.close();
});

test('an image for a snapshot at an index is refused until the store has applied up to it, and while the store restores one', async (t) => {
  const src = await openStore(tempDir(t));
  for (let i = 1; i <= 3; i++) await src.apply(i, 1, encodeWrite(1, i * 4096, Buffer.alloc(4096, i), { session: 3, seq: i }));
  // A source behind the snapshot (a former leader, a lagging follower) would miss entry 4's write.
  await assert.rejects(src.imageChunk(null, 1 << 20, 4), { code: 'UNAVAILABLE' });
  await assert.rejects(src.snapshotImage(4), { code: 'UNAVAILABLE' });
  // At or past the index it serves (an image newer than the snapshot converges on replay).
  assert.equal((await src.imageChunk(null, 1 << 20, 3)).runs.length, 1);
  assert.equal((await src.imageChunk(null, 1 << 20, 2)).runs.length, 1);
  await src.snapshotImage(3);
  // A store in the middle of a restore holds part of an image: it serves none.
  const mid = await openStore(tempDir(t));
  await mid.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4096, 9)));
  await mid.beginRestore();
  await mid.restoreChunk(await src.imageChunk(null, 4096, 3));
  await assert.rejects(mid.imageChunk(null, 1 << 20, 0), { code: 'UNAVAILABLE' });
  await assert.rejects(mid.imageChunk({ volumeId: 1, offset: 0 }, 1 << 20), { code: 'UNAVAILABLE' });
  await assert.rejects(mid.snapshotImage(), { code: 'UNAVAILABLE' });
  await mid.finishRestore(3, 1);
  assert.equal((await mid.imageChunk(null, 1 << 20, 3)).next, null);
  await mid.close();
  await src.close();
});

test('a restore cut short by a crash leaves its mark: a reopened store says so, refuses to serve an image, and a finished restore clears it', async (t) => {
  const src = await openStore(tempDir(t));
  for (let i = 1; i <= 6; i++) await src.apply(i, 1, encodeWrite(1, i * 4096, Buffer.alloc(4096, i)));
  const dir = tempDir(t);
  const dst = await openStore(dir);
  await dst.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0x55)));
  await dst.checkpoint();
  assert.equal(dst.holdsPartialImage, false);
  // The streamed restore starts (the data files are wiped), takes one chunk, and the node dies.
  await dst.beginRestore();
  await dst.restoreChunk(await src.imageChunk(null, 4096));
  await dst.close();
  const reopened = await openStore(dir);
  assert.equal(reopened.holdsPartialImage, true, 'the crash cut the restore short');
  assert.equal(reopened.partialImageCause, 'restore');
  assert.equal(reopened.durableIndex, 1, 'the checkpoint still names the index from before');
  await assert.rejects(reopened.imageChunk(null, 4096), /restoring a snapshot/);
  // The rebuild (a full restore) clears the mark, durably.
  await reopened.beginRestore();
  for (let cursor: ImageCursor | null = null, first = true; first || cursor !== null; first = false) {
    const chunk: ImageChunk = await src.imageChunk(cursor, 8192);
    await reopened.restoreChunk(chunk);
    cursor = chunk.next;
  }
  await reopened.finishRestore(6, 1);
  assert.equal(reopened.holdsPartialImage, false);
  await reopened.close();
  const again = await openStore(dir);
  assert.equal(again.holdsPartialImage, false);
  assert.equal(again.durableIndex, 6);
  assert.deepEqual(await readAll(again, 1, 0, 7 * 4096), await readAll(src, 1, 0, 7 * 4096));
  await again.close();
  // restoreImage (the whole image at once) marks and clears the same way.
  const whole = await openStore(tempDir(t));
  await whole.restoreImage(await src.snapshotImage(), 6, 1);
  assert.equal(whole.holdsPartialImage, false);
  await whole.close();
  await src.close();
});

test('a store marked for a rebuild (pool repair) opens holding nothing to trust, and says why', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(dir);
  await store.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0x33)));
  await store.checkpoint();
  await store.close();
  await PgStore.markForRebuild(dir);
  const reopened = await openStore(dir);
  assert.equal(reopened.holdsPartialImage, true);
  assert.equal(reopened.partialImageCause, 'rebuild');
  await assert.rejects(reopened.imageChunk(null, 4096), /restoring a snapshot/);
  await reopened.close();
});

test('a restore never completes on a store closed under it: the next chunk and the end are refused, and the mark stays', async (t) => {
  const src = await openStore(tempDir(t));
  // One volume per write: each is a run of its own, so chunks of 4 KiB take one each.
  for (let i = 1; i <= 8; i++) await src.apply(i, 1, encodeWrite(i, 4096, Buffer.alloc(4096, i)));
  const dir = tempDir(t);
  const dst = await openStore(dir);
  await dst.beginRestore();
  const first = await src.imageChunk(null, 4096);
  assert.ok(first.next !== null, 'the image takes more than one chunk');
  await dst.restoreChunk(first);
  // The node stops (its stores close) while the pull is still under way.
  await dst.close();
  await assert.rejects(dst.restoreChunk(await src.imageChunk(first.next, 4096)), { code: 'UNAVAILABLE' });
  await assert.rejects(dst.finishRestore(8, 1), { code: 'UNAVAILABLE' });
  const reopened = await openStore(dir);
  assert.equal(reopened.holdsPartialImage, true, 'the restore is known cut short, so the replica is rebuilt');
  assert.equal(reopened.durableIndex, 0);
  await reopened.close();
  // Closing while the end syncs the files is refused too (the close lands between its steps).
  const racing = await openStore(tempDir(t));
  assert.equal(racing.holdsPartialImage, false);
  await racing.beginRestore();
  assert.equal(racing.holdsPartialImage, true, 'a restore under way: no state to checksum or serve');
  for (let cursor: ImageCursor | null = null, firstChunk = true; firstChunk || cursor !== null; firstChunk = false) {
    const chunk: ImageChunk = await src.imageChunk(cursor, 4096);
    await racing.restoreChunk(chunk);
    cursor = chunk.next;
  }
  // Its refusal is awaited from the start: it may come before close() has finished.
  const ending = assert.rejects(racing.finishRestore(8, 1), { code: 'UNAVAILABLE' });
  await racing.close();
  await ending;
  assert.equal(racing.durableIndex, 0);
  await src.close();
});

test('a file opened while a restore replaced the data files is not used: the restored data is in the file on disk, not in the inode the restore unlinked', async (t) => {
  const src = await openStore(tempDir(t));
  for (let i = 1; i <= 4; i++) await src.apply(i, 1, encodeWrite(1, i * 4096, Buffer.alloc(4096, 0x40 + i)));
  const dir = tempDir(t);
  const before = await openStore(dir);
  await before.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0x11)));
  await before.checkpoint();
  await before.close();
  // Reopened: vol-1.dat exists, and nothing has opened it yet.
  const io = new HeldOpenIo(new FsBlockIo());
  const dst = await PgStore.open(io, new ScratchPool(io), dir, 7);
  // A read (a digest, say) opens vol-1.dat; the open is done, its answer comes late...
  const held = io.holdNextOpen(true);
  const reading = dst.read(1, 0, 4096, Buffer.alloc(4096, 0xee));
  await held.entered;
  // ...after a restore has begun: the data files are removed (vol-1.dat unlinked).
  await dst.beginRestore();
  held.release();
  // Refused: the file it finds is gone (zeros) or part of the image, not the state it began on.
  await assert.rejects(reading, { code: 'UNAVAILABLE' });
  for (let cursor: ImageCursor | null = null, first = true; first || cursor !== null; first = false) {
    const chunk: ImageChunk = await src.imageChunk(cursor, 8192);
    await dst.restoreChunk(chunk);
    cursor = chunk.next;
  }
  await dst.finishRestore(4, 1);
  assert.deepEqual(await readAll(dst, 1, 0, 5 * 4096), await readAll(src, 1, 0, 5 * 4096));
  await dst.close();
  // What a restart finds on disk: the image, not a file the restore had removed.
  const again = await openStore(dir);
  assert.equal(again.durableIndex, 4);
  assert.deepEqual(await readAll(again, 1, 0, 5 * 4096), await readAll(src, 1, 0, 5 * 4096), 'the restored data is not in vol-1.dat');
  await again.close();
  await src.close();
});

test('a retry whose first attempt applied and then left the dedupe window is refused, not applied twice', async (t) => {
  const s = await openStore(tempDir(t));
  const first = { session: 5, seq: 1 };
  let index = 0;
  await s.apply(++index, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0xaa), first)); // applied; its answer lost
  const sentAt = 0; // the gateway knew nothing of this PG's log before the first attempt
  await s.apply(++index, 1, encodeWrite(1, 0, Buffer.alloc(4096, 0xbb), { session: 6, seq: 1 })); // another client's later write
  assert.equal(s.coversRetry(sentAt, index), true, 'the first attempt is still remembered');
  // Enough other writes that the first attempt's key leaves the window.
  const window = 16384;
  for (let i = 0; i < window; i++) await s.apply(++index, 1, encodeWrite(1, 8192, Buffer.alloc(512, i & 0xff), { session: 7, seq: i + 1 }));
  assert.equal(s.coversRetry(sentAt, index), false, 'the first attempt may have applied and been forgotten');
  // A retry first sent after the window's oldest key applied is still judged safe.
  assert.equal(s.coversRetry(index - 10, index), true);
  // ...unless the entries ahead of it in the log could push out a key newer than its send:
  // the window holds window - 10 keys applied at or before it, which leave first.
  assert.equal(s.coversRetry(index - 10, index + window - 10), true);
  assert.equal(s.coversRetry(index - 10, index + window - 9), false);
  assert.deepEqual(await readAll(s, 1, 0, 4096), Buffer.alloc(4096, 0xbb));
});
