import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setLogSink } from '../../src/common/log.js';
import { testBackends } from '../../src/io/testing.js';
import type { BlockFile, BlockIo } from '../../src/io/types.js';
import { WalCompacted } from '../../src/wal/errors.js';
import { batchHeaderBytes, blockBytes, readU64 } from '../../src/wal/format.js';
import { Wal } from '../../src/wal/index.js';
import type { WalEntry, WalOptions } from '../../src/wal/types.js';
import { tempDir } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

// Recovery logs errors on purpose here; keep the test output readable.
setLogSink(() => undefined);

const small = { segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024 };

function payload(group: number, index: number, term: number, bytes = 300): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (group * 31 + index * 7 + term * 13 + i) & 0xff;
  return b;
}

function entry(group: number, index: number, term = 1, bytes = 300): WalEntry {
  return { index, term, type: index % 3, data: payload(group, index, term, bytes) };
}

async function openWal(dir: string, io: BlockIo, extra: Partial<WalOptions> = {}): Promise<Wal> {
  return Wal.open({ dir, io, ...small, ...extra });
}

/** Appends `count` entries to each group, one awaited batch per step. */
async function fill(wal: Wal, groups: number[], count: number, term = 1, bytes = 300): Promise<void> {
  for (let k = 0; k < count; k++) {
    await Promise.all(groups.map((g) => wal.append(g, [entry(g, wal.lastIndex(g) + 1, term, bytes)])));
  }
}

/** A BlockIo whose durable writes can be held back (they wait, then go, in order). */
class GatedIo implements BlockIo {
  private gate: Promise<void> | null = null;
  private open_: (() => void) | null = null;
  readonly kind;
  readonly alignmentBytes;

  constructor(private readonly inner: BlockIo) {
    this.kind = inner.kind;
    this.alignmentBytes = inner.alignmentBytes;
  }

  hold(): void {
    this.gate = new Promise((r) => (this.open_ = r));
  }

  release(): void {
    this.open_?.();
    this.gate = null;
  }

  allocAligned(lengthBytes: number): Buffer {
    return this.inner.allocAligned(lengthBytes);
  }

  close(): Promise<void> {
    this.release(); // a failed test must not leave writes waiting forever
    return this.inner.close();
  }

  async open(path: string, options?: Parameters<BlockIo['open']>[1]): Promise<BlockFile> {
    const file = await this.inner.open(path, options);
    const io = this;
    return Object.assign(Object.create(file) as BlockFile, {
      async pwrite(buf: Buffer, offsetBytes: number, dsync?: boolean): Promise<void> {
        if (dsync && io.gate) await io.gate;
        return file.pwrite(buf, offsetBytes, dsync);
      },
      async pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync?: boolean): Promise<void> {
        if (dsync && io.gate) await io.gate;
        return file.pwritev(bufs, offsetBytes, dsync);
      },
    });
  }
}

async function assertEntries(wal: Wal, group: number, lo: number, hi: number, term = 1, bytes = 300): Promise<void> {
  const es = await wal.entries(group, lo, hi + 1);
  assert.equal(es.length, hi - lo + 1, `group ${group}: entries ${lo}..${hi}`);
  for (const e of es) {
    assert.equal(e.term, term, `group ${group} entry ${e.index} term`);
    assert.ok(Buffer.from(e.data).equals(payload(group, e.index, term, bytes)), `group ${group} entry ${e.index} payload`);
  }
}

/** Batch offsets of a segment file: [offset, bytes, seq] of each valid-looking batch header. */
function batchesOf(path: string): { offset: number; bytes: number; seq: number }[] {
  const data = readFileSync(path);
  const out: { offset: number; bytes: number; seq: number }[] = [];
  let off = blockBytes;
  while (off + batchHeaderBytes <= data.length && data.readUInt32LE(off) === 0x42574252) {
    const bytes = data.readUInt32LE(off + 12);
    out.push({ offset: off, bytes, seq: readU64(data, off + 16) });
    off += bytes;
  }
  return out;
}

function segmentFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith('.wal'))
    .sort()
    .map((n) => join(dir, n));
}

function patch(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

function flipBit(path: string, offset: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, offset);
  b[0] ^= 0x10;
  writeSync(fd, b, 0, 1, offset);
  closeSync(fd);
}

/** The segment holding the tail (the last one with batches). */
function tailSegment(dir: string): string {
  const withData = segmentFiles(dir).filter((p) => batchesOf(p).length > 0);
  return withData[withData.length - 1];
}

for (const backend of testBackends()) {
  const opts = { skip: backend.skip };
  const name = (s: string): string => `${backend.name}: ${s}`;

  test(name('entries, hard state and snapshot metadata survive a clean reopen'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    assert.equal(wal.recovery.records, 0);
    await fill(wal, [1, 2, 7], 40);
    await wal.saveHardState(2, { term: 3, vote: 5, commit: 17 });
    await wal.installSnapshot(7, { index: 10, term: 1 });
    await wal.close();
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.recovery.cut, null);
    assert.equal(wal.recovery.corruption, null);
    assert.deepEqual(wal.groupIds(), [1, 2, 7]);
    assert.deepEqual(wal.hardState(2), { term: 3, vote: 5, commit: 17 });
    assert.deepEqual(wal.hardState(1), { term: 0, vote: 0, commit: 0 });
    assert.deepEqual(wal.snapshotMeta(7), { index: 10, term: 1 });
    assert.equal(wal.firstIndex(7), 11);
    assert.equal(wal.term(7, 10), 1);
    await assertEntries(wal, 1, 1, 40);
    await assertEntries(wal, 7, 11, 40);
    await assert.rejects(wal.entries(7, 5, 12), WalCompacted);
    assert.equal(wal.lastIndex(99), 0);
  });

  test(name('a torn last batch is cut at its start and reported; earlier batches stay'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [1], 20);
    // One last batch of several records, then tear it: its second block never made it.
    await wal.append(1, [21, 22, 23, 24, 25, 26, 27, 28, 29, 30].map((i) => entry(1, i, 1, 1000)));
    await wal.close();
    const seg = tailSegment(dir);
    const last = batchesOf(seg).at(-1)!;
    assert.ok(last.bytes >= 2 * blockBytes, 'the last batch spans blocks');
    patch(seg, last.offset + blockBytes, Buffer.alloc(blockBytes));
    wal = await openWal(dir, io);
    const cut = wal.recovery.cut;
    assert.ok(cut, 'the cut is reported');
    assert.equal(cut.offsetBytes, last.offset);
    assert.match(cut.reason, /checksum|length/);
    assert.equal(wal.recovery.corruption, null);
    assert.equal(wal.lastIndex(1), 20, 'the torn batch is gone as a whole');
    await assertEntries(wal, 1, 1, 20);
    // Appending continues over the cut; the next reopen is clean.
    await fill(wal, [1], 5, 2);
    await wal.close();
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.recovery.cut, null);
    assert.equal(wal.lastIndex(1), 25);
    await assertEntries(wal, 1, 21, 25, 2);
  });

  test(name('a zeroed tail ends the log there without complaint'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [3], 30);
    await wal.close();
    const seg = tailSegment(dir);
    const bs = batchesOf(seg);
    const from = bs[bs.length - 5];
    const end = bs.at(-1)!.offset + bs.at(-1)!.bytes;
    patch(seg, from.offset, Buffer.alloc(end - from.offset));
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.recovery.corruption, null);
    assert.equal(wal.recovery.cut, null, 'zeros are never-written space, not a torn write');
    assert.equal(wal.lastIndex(3), 25);
    assert.equal(wal.recovery.tail.offsetBytes, from.offset);
    await assertEntries(wal, 3, 1, 25);
  });

  test(name('a bit flip in the middle of the log is reported as corruption, not truncated'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [1], 10);
    // A batch holding only group 2's records, then more of group 1 after it.
    await wal.append(2, [1, 2, 3].map((i) => entry(2, i)));
    await fill(wal, [1], 10);
    await wal.close();
    const seg = tailSegment(dir);
    const bs = batchesOf(seg);
    const victim = bs[10]; // group 2's batch, after the 10 of group 1
    const before = readFileSync(seg);
    flipBit(seg, victim.offset + batchHeaderBytes + 40 + 100); // inside a payload
    wal = await openWal(dir, io);
    const c = wal.recovery.corruption;
    assert.ok(c, 'corruption is reported');
    assert.equal(c.offsetBytes, victim.offset);
    assert.match(c.reason, /checksum/);
    assert.equal(wal.recovery.cut, null, 'nothing is cut');
    assert.deepEqual(wal.recovery.needsRepair, [2]);
    assert.equal(wal.needsRepair(2), true);
    assert.equal(wal.needsRepair(1), false);
    assert.equal(wal.lastIndex(1), 20, 'acknowledged records after the bad spot are kept');
    await assertEntries(wal, 1, 1, 20);
    await wal.close();
    const after = readFileSync(seg);
    assert.ok(after.subarray(victim.offset + victim.bytes).equals(before.subarray(victim.offset + victim.bytes)), 'bytes after the bad batch untouched');
    // Still reported on the next open; a snapshot from a peer repairs the group.
    wal = await openWal(dir, io);
    assert.deepEqual(wal.recovery.needsRepair, [2]);
    await wal.installSnapshot(2, { index: 3, term: 1 });
    assert.equal(wal.needsRepair(2), false);
    await wal.append(2, [entry(2, 4)]);
    await wal.close();
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.needsRepair(2), false);
    assert.equal(wal.lastIndex(2), 4);
  });

  test(name('with batches in flight, a bad batch followed only by in-window batches is a torn tail'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io, { maxBatchesInFlight: 3 });
    await fill(wal, [1], 20);
    await wal.close();
    const seg = tailSegment(dir);
    const bs = batchesOf(seg);
    const victim = bs[bs.length - 3]; // entry 18; 19 and 20 may have been in flight with it
    flipBit(seg, victim.offset + batchHeaderBytes + 40 + 10);
    wal = await openWal(dir, io, { maxBatchesInFlight: 3 });
    t.after(() => wal.close());
    assert.equal(wal.recovery.corruption, null);
    assert.ok(wal.recovery.cut);
    assert.equal(wal.recovery.cut.offsetBytes, victim.offset);
    assert.equal(wal.recovery.cut.batchesDropped, 2, 'the two later batches were never acknowledged');
    assert.equal(wal.lastIndex(1), 17);
    // Same damage one batch earlier: batch 20 could only be written after it completed.
    await fill(wal, [1], 5);
    await wal.close();
    const bs2 = batchesOf(seg);
    flipBit(seg, bs2[bs2.length - 4].offset + batchHeaderBytes + 40 + 10);
    wal = await openWal(dir, io, { maxBatchesInFlight: 3 });
    assert.ok(wal.recovery.corruption, 'a valid batch 3 sequence numbers later proves it was acknowledged');
    assert.deepEqual(wal.recovery.needsRepair, [1]);
  });

  test(name('an unreadable batch header mid-log flags every group'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [1, 2], 12);
    await wal.close();
    const seg = tailSegment(dir);
    const victim = batchesOf(seg)[5];
    patch(seg, victim.offset, Buffer.alloc(blockBytes));
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.ok(wal.recovery.corruption);
    assert.equal(wal.recovery.corruption.offsetBytes, victim.offset);
    assert.deepEqual(wal.recovery.needsRepair, [1, 2]);
  });

  test(name('logs spanning many segments recover across every boundary, and a tear at a segment start is cut'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [1, 2], 150, 1, 2000);
    const segs = wal.segmentSeqs().length;
    assert.ok(segs >= 3, `log spans ${segs} segments`);
    await wal.close();
    wal = await openWal(dir, io);
    assert.equal(wal.recovery.cut, null);
    await assertEntries(wal, 1, 1, 150, 1, 2000);
    await assertEntries(wal, 2, 1, 150, 1, 2000);
    // Fill up to exactly a new segment's first batch, then tear that batch.
    const startSeg = wal.segmentSeqs().at(-1)!;
    while (wal.segmentSeqs().at(-1) === startSeg) await fill(wal, [1], 1, 1, 2000);
    const lastBefore = wal.lastIndex(1) - 1;
    await wal.close();
    const seg = tailSegment(dir);
    const bs = batchesOf(seg);
    assert.equal(bs.length, 1, 'the new segment holds one batch');
    patch(seg, bs[0].offset + 1024, Buffer.alloc(512, 0xee)); // inside its records
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.ok(wal.recovery.cut);
    assert.equal(wal.recovery.cut.offsetBytes, blockBytes);
    assert.equal(wal.lastIndex(1), lastBefore);
    await assertEntries(wal, 1, lastBefore - 5, lastBefore, 1, 2000);
  });

  test(name('suffix truncation and conflicting appends replay to the same log'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await fill(wal, [5], 10);
    await wal.truncateSuffix(5, 8);
    assert.equal(wal.lastIndex(5), 7);
    await wal.append(5, [entry(5, 8, 2), entry(5, 9, 2)]);
    // A conflicting append (Raft's new leader overwriting) replaces the suffix too.
    await wal.append(5, [entry(5, 9, 3), entry(5, 10, 3)]);
    await wal.close();
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.lastIndex(5), 10);
    assert.deepEqual([7, 8, 9, 10].map((i) => wal.term(5, i)), [1, 2, 3, 3]);
    await assertEntries(wal, 5, 1, 7, 1);
    await assertEntries(wal, 5, 8, 8, 2);
    await assertEntries(wal, 5, 9, 10, 3);
  });

  test(name('checkpoints let segments be recycled; first index and hard state survive them'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    let wal = await openWal(dir, io);
    await wal.saveHardState(1, { term: 4, vote: 1, commit: 3 });
    for (let round = 0; round < 12; round++) {
      await fill(wal, [1, 2], 25, 1, 2000);
      await wal.checkpoint(1, wal.lastIndex(1) - 5);
      await wal.checkpoint(2, wal.lastIndex(2) - 5);
    }
    assert.ok(wal.stats.segmentsRecycled > 0, 'segments were recycled');
    assert.ok(segmentFiles(dir).length <= 4, `files stay bounded: ${segmentFiles(dir).length}`);
    const first = wal.firstIndex(1);
    await wal.close();
    wal = await openWal(dir, io);
    t.after(() => wal.close());
    assert.equal(wal.recovery.corruption, null);
    assert.deepEqual(wal.recovery.needsRepair, []);
    assert.equal(wal.firstIndex(1), first);
    assert.equal(wal.lastIndex(1), 300);
    assert.deepEqual(wal.hardState(1), { term: 4, vote: 1, commit: 3 });
    await assertEntries(wal, 1, first, 300, 1, 2000);
  });

  test(name('segments in use: a burst leaves idle segments, which checkpoints cannot free and which do not count'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const wal = await openWal(dir, io, { idleSegmentsKept: 1000 });
    t.after(() => wal.close());
    assert.equal(wal.segmentsInUse(), 1);
    // A burst with no checkpoint: every segment holds needed entries.
    await fill(wal, [1, 2], 150, 1, 2000);
    const burst = wal.segmentSeqs().length;
    assert.ok(burst >= 4, `the burst spans ${burst} segments`);
    assert.equal(wal.segmentsInUse(), burst);
    // Both groups checkpoint: the old segments stay (kept for reuse here), recycled one per
    // rotation, but none of them is in use any more.
    await wal.checkpoint(1, wal.lastIndex(1));
    await wal.checkpoint(2, wal.lastIndex(2));
    assert.equal(wal.segmentSeqs().length, burst);
    assert.equal(wal.segmentsInUse(), 1);
    // Steady writes with checkpoints now: the in-use count stays small while the files left by
    // the burst are recycled one per rotation (their number does not shrink).
    for (let round = 0; round < 6; round++) {
      await fill(wal, [1, 2], 25, 1, 2000);
      await wal.checkpoint(1, wal.lastIndex(1) - 5);
      await wal.checkpoint(2, wal.lastIndex(2) - 5);
      assert.ok(wal.segmentsInUse() <= 2, `round ${round}: ${wal.segmentsInUse()} segments in use`);
      assert.ok(wal.segmentSeqs().length >= burst - 1, `round ${round}: ${wal.segmentSeqs().length} segment files`);
    }
    assert.equal(wal.stats.segmentsRemoved, 0);
    // One group that stops checkpointing holds every segment from its oldest entry on.
    const oldest = wal.segmentSeqs().at(-1)!;
    await fill(wal, [1, 2], 100, 1, 2000);
    await wal.checkpoint(1, wal.lastIndex(1));
    assert.equal(wal.segmentsInUse(), wal.segmentSeqs().filter((seq) => seq >= oldest).length);
    assert.ok(wal.segmentsInUse() >= 2);
  });

  test(name('idle segments beyond the kept few are removed, the log reopens whole, and a group still holding old entries keeps their segments'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const files = (): number => readdirSync(dir).filter((n) => n.endsWith('.wal')).length;
    let wal = await openWal(dir, io, { idleSegmentsKept: 1 });
    // Group 3 writes a little first and never checkpoints: it pins the segment it wrote to.
    await fill(wal, [3], 3, 1, 500);
    await fill(wal, [1, 2], 150, 1, 2000);
    const burst = wal.segmentSeqs().length;
    assert.ok(burst >= 4, `the burst spans ${burst} segments`);
    await wal.checkpoint(1, wal.lastIndex(1));
    await wal.checkpoint(2, wal.lastIndex(2));
    await until(() => wal.segmentsInUse() === burst && wal.stats.segmentsRemoved === 0, 10_000, 'group 3 pins the first segment');
    assert.equal(wal.segmentSeqs().length, burst, 'nothing is idle while group 3 needs the first segment');
    // Group 3 checkpoints: every segment but the newest is idle; all but one go (removed, or
    // one of them recycled as the spare if a rotation still waited for one).
    const recycledBefore = wal.stats.segmentsRecycled;
    await wal.checkpoint(3, wal.lastIndex(3));
    await until(() => wal.segmentSeqs().length === 2, 10_000, `idle segments removed (${wal.segmentSeqs().length} left)`);
    assert.equal(wal.stats.segmentsRemoved + wal.stats.segmentsRecycled - recycledBefore, burst - 2);
    assert.ok(wal.stats.segmentsRemoved >= burst - 3, `${wal.stats.segmentsRemoved} segments removed of ${burst - 2} idle`);
    assert.equal(wal.segmentsInUse(), 1);
    assert.ok(files() <= 3, `${files()} segment files: the newest, one kept idle, the spare`);
    // Writes go on, recycling the kept segment; the log reopens with every group's state.
    await fill(wal, [1, 2], 20, 1, 2000);
    const last = [1, 2, 3].map((g) => wal.lastIndex(g));
    await wal.close();
    wal = await openWal(dir, io, { idleSegmentsKept: 1 });
    t.after(() => wal.close());
    assert.equal(wal.recovery.corruption, null);
    assert.deepEqual(wal.recovery.needsRepair, []);
    assert.deepEqual([1, 2, 3].map((g) => wal.lastIndex(g)), last);
    await assertEntries(wal, 1, wal.firstIndex(1), last[0], 1, 2000);
    assert.equal(wal.firstIndex(3), last[2] + 1, 'group 3 reopens at its checkpoint');
    await assert.rejects(openWal(join(dir, 'other'), io, { idleSegmentsKept: -1 }), /idleSegmentsKept/);
  });

  test(name('a segment is neither removed nor recycled while the checkpoint that idled it is not durable'), opts, async (t) => {
    const dir = tempDir(t);
    const io = new GatedIo(backend.make());
    t.after(() => io.close());
    const wal = await openWal(dir, io, { idleSegmentsKept: 0 });
    t.after(() => wal.close());
    await fill(wal, [1, 2], 150, 1, 2000);
    const before = wal.segmentSeqs();
    assert.ok(before.length >= 4, `the burst spans ${before.length} segments`);
    const recycled = wal.stats.segmentsRecycled;
    // The checkpoints' batch is held back from the device: in memory every old segment is
    // idle, but a crash now would bring back the groups' old compaction points.
    io.hold();
    const checkpoints = [wal.checkpoint(1, wal.lastIndex(1)), wal.checkpoint(2, wal.lastIndex(2))];
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(wal.segmentSeqs(), before, 'a segment was removed before the checkpoints were durable');
    assert.equal(wal.stats.segmentsRemoved, 0);
    assert.equal(wal.stats.segmentsRecycled, recycled);
    io.release();
    await Promise.all(checkpoints);
    await until(() => wal.segmentSeqs().length === 1, 10_000, `idle segments removed once durable (${wal.segmentSeqs().length} left)`);
    assert.equal(wal.stats.segmentsRemoved, before.length - 1);
  });

  test(name('payloads beyond the cache bound are read back from the segments'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    const wal = await openWal(dir, io, { cacheBytes: 20_000 });
    t.after(() => wal.close());
    await fill(wal, [1], 100, 1, 1000);
    assert.ok(wal.cachedBytes <= 20_000);
    await assertEntries(wal, 1, 1, 100, 1, 1000);
    const some = await wal.entries(1, 1, 101, 5000);
    assert.equal(some.length, 5, 'maxBytes bounds the answer');
  });

  test(name('limits are enforced: record size, batch size, batches in flight'), opts, async (t) => {
    const dir = tempDir(t);
    const io = backend.make();
    t.after(() => io.close());
    await assert.rejects(openWal(dir, io, { maxBatchesInFlight: 9 }), /maxBatchesInFlight/);
    await assert.rejects(openWal(dir, io, { maxRecordBytes: 64 * 1024 }), /does not fit/);
    const wal = await openWal(dir, io, { maxBatchesInFlight: 2 });
    t.after(() => wal.close());
    await assert.rejects(wal.append(1, [{ index: 1, term: 1, type: 0, data: Buffer.alloc(32 * 1024) }]), /maxRecordBytes/);
    await assert.rejects(wal.append(1, [entry(1, 2)]), /gap/);
    // Many appends at once: batches never exceed maxBatchBytes and all complete in order.
    const ps = [];
    for (let i = 1; i <= 200; i++) ps.push(wal.append(1, [entry(1, i, 1, 3000)]));
    await Promise.all(ps);
    assert.ok(wal.stats.batchesWritten >= (200 * 3040) / (32 * 1024), 'split into batches of at most maxBatchBytes');
    await assertEntries(wal, 1, 1, 200, 1, 3000);
  });
}
