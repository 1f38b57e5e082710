/**
 * Open-time recovery: read every segment in order, verify every batch and record, replay them
 * into the group table, and decide what the first bad spot is:
 *  - a clean end (zeros, or bytes from an earlier use of the file): nothing to report;
 *  - a torn or unacknowledged tail: no valid batch follows that could only have been written
 *    after the bad one completed. It is cut (zeroed, later segments re-salted) and reported;
 *  - corruption: a valid batch follows at least `maxBatchesInFlight` sequence numbers later,
 *    so the bad batch had completed (and been acknowledged). Nothing is truncated; the bad
 *    batch is skipped, replay resumes after it, and the groups it may have held are flagged.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/log.js';
import type { BlockIo } from '../io/types.js';
import {
  RecordKind,
  batchHeaderBytes,
  blockBytes,
  decodeBatchHeader,
  decodeRecord,
  decodeSegmentHeader,
  isZeroHeader,
  metaFlagNeedsRepair,
  newRecordView,
  parseSegmentFileName,
  readU64,
  recordCrcSeed,
  segmentHeaderBytes,
  type BatchHeader,
  type RecordView,
} from './format.js';
import type { GroupTable } from './groups.js';
import { type Segment, writeSegmentHeader } from './segment.js';
import { writeZeros } from '../io/zeros.js';
import type { WalRecoveryReport } from './types.js';

export interface RecoveredLog {
  /** Segments holding the log, oldest first; the last is where appends continue. */
  live: Segment[];
  /** A prepared, empty segment after the last live one, if any. */
  spare: Segment | null;
  nextBatchSeq: number;
  report: WalRecoveryReport;
}

interface Found {
  segIndex: number;
  offset: number;
  seq: number;
}

export async function recoverLog(io: BlockIo, dir: string, groups: GroupTable, log: Logger): Promise<RecoveredLog> {
  await mkdir(dir, { recursive: true });
  const names = (await readdir(dir)).filter((n) => parseSegmentFileName(n) !== undefined).sort();
  const scratch = io.allocAligned(blockBytes);
  const segs: Segment[] = [];
  const unusable: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    const file = await io.open(path);
    const n = await file.pread(scratch, 0);
    const h = n === blockBytes ? decodeSegmentHeader(scratch) : 'short file';
    if (typeof h === 'string' || h.seq !== parseSegmentFileName(name) || (await file.size()) < h.segmentBytes) {
      // A segment being prepared or recycled when the process died: never part of the log
      // unless a later valid segment says otherwise (then the scan reports corruption).
      await file.close();
      unusable.push(path);
      continue;
    }
    segs.push({ seq: h.seq, salt: h.salt, path, file, segmentBytes: h.segmentBytes, maxBatchBytes: h.maxBatchBytes, maxBatchesInFlight: h.maxBatchesInFlight, writeOffset: segmentHeaderBytes, firstBatchSeq: -1 });
  }

  const report: WalRecoveryReport = {
    segments: segs.length,
    batches: 0,
    records: 0,
    tail: { segmentSeq: 0, offsetBytes: segmentHeaderBytes },
    cut: null,
    corruption: null,
    needsRepair: [],
  };
  if (segs.length === 0) {
    for (const p of unusable) await rm(p, { force: true });
    return { live: [], spare: null, nextBatchSeq: 1, report };
  }

  const maxSegBytes = Math.max(...segs.map((s) => s.segmentBytes));
  const window = Math.max(...segs.map((s) => s.maxBatchesInFlight));
  const buf = io.allocAligned(maxSegBytes);
  let loaded = -1;
  const load = async (i: number): Promise<Buffer> => {
    if (loaded !== i) {
      const s = segs[i];
      const view = buf.subarray(0, s.segmentBytes);
      const n = await s.file.pread(view, 0);
      if (n < s.segmentBytes) view.fill(0, n);
      loaded = i;
    }
    return buf.subarray(0, segs[i].segmentBytes);
  };
  // Later segments are only peeked at: batches that follow a stop point sit within the first
  // `window` batches of each later segment (every segment's log starts right after its header).
  const peekLimit = (s: Segment): number => Math.min(s.segmentBytes, segmentHeaderBytes + window * s.maxBatchBytes + blockBytes);
  const peekBuf = io.allocAligned(Math.max(...segs.map(peekLimit)));
  const peek = async (i: number, bytes = peekLimit(segs[i])): Promise<Buffer> => {
    const view = peekBuf.subarray(0, bytes);
    const n = await segs[i].file.pread(view, 0);
    if (n < bytes) view.fill(0, n);
    return view;
  };

  const rv = newRecordView();
  let expected = -1; // next batch sequence; -1 until the first batch
  let si = 0;
  let pos = segmentHeaderBytes;
  let corruptionCount = 0;
  let flagAllFromNowOn = false;
  const repairs = new Set<number>();

  scan: for (;;) {
    let seg = segs[si];
    if (pos + seg.maxBatchBytes > seg.segmentBytes) {
      // The writer moves to the next segment exactly here.
      seg.writeOffset = pos;
      if (si + 1 >= segs.length) break;
      si++;
      pos = segmentHeaderBytes;
      continue;
    }
    seg = segs[si];
    const data = await load(si);
    const h = decodeBatchHeader(data, pos, seg.salt, seg.segmentBytes, seg.maxBatchBytes);
    let reason: string | null = null;
    if (!h) reason = isZeroHeader(data, pos) ? 'zeroed' : 'no valid batch header';
    else if (expected !== -1 && h.batchSeq !== expected) reason = `batch sequence ${h.batchSeq}, expected ${expected}`;
    else reason = checkRecords(data, pos, h, rv);
    if (reason === null) {
      const hh = h as BatchHeader;
      replayBatch(data, pos, hh, seg.seq, groups, rv, flagAllFromNowOn, repairs);
      if (seg.firstBatchSeq === -1) seg.firstBatchSeq = hh.batchSeq;
      report.batches++;
      report.records += hh.recordCount;
      expected = hh.batchSeq + 1;
      pos += hh.batchBytes;
      seg.writeOffset = pos;
      continue;
    }

    // The writer also moves on early (its limits changed across a restart), possibly leaving
    // segments without a batch: the log continues where a later segment starts with exactly
    // the batch expected here. Before the first batch, leading segments without any batch
    // (left so, then made the oldest by recycling) are skipped the same way.
    const leadingEmpty = expected === -1 && pos === segmentHeaderBytes && !(await hasBatchAfter(segs[si], data, pos));
    if (expected !== -1 || leadingEmpty) {
      let jump = -1;
      for (let j = si + 1; j < segs.length && jump === -1; j++) {
        const next = segs[j];
        const nextData = await peek(j, segmentHeaderBytes + blockBytes);
        const nh = decodeBatchHeader(nextData, segmentHeaderBytes, next.salt, next.segmentBytes, next.maxBatchBytes);
        if (nh && (nh.batchSeq === expected || leadingEmpty)) jump = j;
        else if (nh) break;
      }
      if (jump !== -1) {
        seg.writeOffset = pos;
        si = jump;
        pos = segmentHeaderBytes;
        continue;
      }
    }
    // Stopped at (si, pos). What follows decides between end, torn tail and corruption.
    const later = await scanForward(segs, si, pos, expected, data, peek);
    const decisive = expected === -1 ? later.filter(() => false) : later.filter((f) => f.seq >= expected + window);
    if (decisive.length > 0 || (expected === -1 && later.length > 0)) {
      corruptionCount++;
      const resumeAt = later.reduce((a, b) => (b.seq < a.seq ? b : a));
      if (!report.corruption) report.corruption = { segmentSeq: seg.seq, offsetBytes: pos, reason };
      log.error('WAL corruption in the middle of the log: acknowledged records are damaged', {
        segmentSeq: seg.seq,
        offsetBytes: pos,
        reason,
        resumeAtBatch: resumeAt.seq,
      });
      // Which groups may have lost records: those named in the bad batch if its structure
      // holds and nothing else is missing, else every group.
      const named = h && expected !== -1 && resumeAt.seq === expected + 1 ? groupsNamed(data, pos, h, rv) : null;
      if (named) for (const g of named) markRepair(groups, g, repairs);
      else {
        flagAllFromNowOn = true;
        for (const g of groups.all()) markRepair(groups, g.id, repairs);
      }
      si = resumeAt.segIndex;
      pos = resumeAt.offset;
      expected = resumeAt.seq;
      continue scan;
    }
    seg.writeOffset = pos;
    const tornHere = h !== null && (expected === -1 || h.batchSeq === expected);
    if (tornHere || later.length > 0) {
      // A batch that never completed, and maybe a few after it that did but were never
      // acknowledged: cut, so nothing of them can be mistaken for log later.
      const cutBytes = Math.min(seg.segmentBytes, pos + window * seg.maxBatchBytes) - pos;
      const zeros = io.allocAligned(Math.min(cutBytes, 1 << 20));
      await writeZeros(seg.file, zeros, pos, pos + cutBytes);
      await seg.file.fdatasync();
      const resalted = new Set(later.filter((f) => f.segIndex > si).map((f) => f.segIndex));
      for (const i of resalted) await writeSegmentHeader(io, segs[i], scratch);
      report.cut = { segmentSeq: seg.seq, offsetBytes: pos, reason, bytes: cutBytes, batchesDropped: later.length };
      log.warn('WAL recovery cut a torn tail', { ...report.cut });
    }
    break;
  }

  // Live segments end at the tail; the next one (if prepared and empty) is the spare; anything
  // after it, and unusable files, are removed so future segment names are free.
  const tailIndex = si;
  const live = segs.slice(0, tailIndex + 1);
  let spare: Segment | null = null;
  for (let i = tailIndex + 1; i < segs.length; i++) {
    const s = segs[i];
    if (!spare && s.seq === segs[tailIndex].seq + 1) {
      if (s.firstBatchSeq !== -1 || !looksEmpty(s, await peek(i, segmentHeaderBytes + blockBytes))) await writeSegmentHeader(io, s, scratch);
      s.writeOffset = segmentHeaderBytes;
      spare = s;
    } else {
      await s.file.close();
      await rm(s.path, { force: true });
    }
  }
  for (const p of unusable) {
    const seq = parseSegmentFileName(p.slice(p.lastIndexOf('/') + 1)) ?? 0;
    if (seq < segs[tailIndex].seq && seq > segs[0].seq) {
      if (!report.corruption) report.corruption = { segmentSeq: seq, offsetBytes: 0, reason: 'segment header unreadable' };
      for (const g of groups.all()) markRepair(groups, g.id, repairs);
    }
    await rm(p, { force: true });
  }
  for (const g of groups.all()) {
    if (g.gapBase !== 0) {
      // Entries below gapBase were never covered by a checkpoint: a hole in the log.
      log.error('WAL recovery found a hole in a group log', { groupId: g.id, missingUpTo: g.gapBase });
      markRepair(groups, g.id, repairs);
      g.gapBase = 0;
    }
  }
  report.needsRepair = [...repairs].filter((id) => groups.get(id)?.needsRepair).sort((a, b) => a - b);
  report.tail = { segmentSeq: segs[tailIndex].seq, offsetBytes: segs[tailIndex].writeOffset };
  if (corruptionCount > 1 && report.corruption) report.corruption.reason += ` (and ${corruptionCount - 1} more bad spots)`;
  return { live, spare, nextBatchSeq: expected === -1 ? 1 : expected, report };
}

function markRepair(groups: GroupTable, id: number, repairs: Set<number>): void {
  groups.getOrCreate(id).needsRepair = true;
  repairs.add(id);
}

/** Null when every record of the batch decodes and passes its checksum, else the reason. */
function checkRecords(data: Buffer, pos: number, h: BatchHeader, rv: RecordView): string | null {
  const seed = recordCrcSeed(h.salt, h.batchSeq);
  const end = pos + h.usedBytes;
  let off = pos + batchHeaderBytes;
  for (let i = 0; i < h.recordCount; i++) {
    const why = decodeRecord(data, off, end, seed, rv);
    if (why) return `record ${i}: ${why}`;
    off = rv.next;
  }
  return off === end ? null : 'records do not fill the batch';
}

/** Group ids of every record in a damaged batch, or null if its structure is broken. */
function groupsNamed(data: Buffer, pos: number, h: BatchHeader, rv: RecordView): number[] | null {
  const seed = recordCrcSeed(h.salt, h.batchSeq);
  const end = pos + h.usedBytes;
  let off = pos + batchHeaderBytes;
  const ids: number[] = [];
  for (let i = 0; i < h.recordCount; i++) {
    const why = decodeRecord(data, off, end, seed, rv);
    if (why && why !== 'record checksum mismatch') return null;
    ids.push(rv.groupId);
    off = rv.next;
  }
  return off === end ? ids : null;
}

function replayBatch(data: Buffer, pos: number, h: BatchHeader, segSeq: number, groups: GroupTable, rv: RecordView, flagNew: boolean, repairs: Set<number>): void {
  const seed = recordCrcSeed(h.salt, h.batchSeq);
  const end = pos + h.usedBytes;
  let off = pos + batchHeaderBytes;
  for (let i = 0; i < h.recordCount; i++) {
    decodeRecord(data, off, end, seed, rv);
    const existed = groups.get(rv.groupId) !== undefined;
    const g = groups.getOrCreate(rv.groupId);
    if (!existed && flagNew) markRepair(groups, g.id, repairs);
    switch (rv.kind as RecordKind) {
      case RecordKind.Entry:
        if (!g.put(rv.index, rv.term, rv.entryType, segSeq, off, rv.payloadBytes, seed, null)) {
          // Entries below it were in recycled segments (a later checkpoint will say so) or
          // were lost (checked once replay ends).
          g.restartAt(rv.index);
          g.put(rv.index, rv.term, rv.entryType, segSeq, off, rv.payloadBytes, seed, null);
        }
        break;
      case RecordKind.HardState:
        g.hard = { term: rv.term, vote: rv.aux, commit: rv.index };
        break;
      case RecordKind.Truncate:
        g.truncateFrom(rv.index);
        break;
      case RecordKind.Checkpoint:
        g.compactTo(rv.index);
        break;
      case RecordKind.Snapshot:
        g.installSnapshot(rv.index, rv.term);
        repairs.delete(g.id);
        break;
      case RecordKind.Meta: {
        const p = rv.payloadOffset;
        g.applyMeta(
          { term: rv.term, vote: rv.aux, commit: rv.index },
          readU64(data, p),
          readU64(data, p + 8),
          readU64(data, p + 16),
          readU64(data, p + 24),
          (data.readUInt32LE(p + 32) & metaFlagNeedsRepair) !== 0,
        );
        if (g.needsRepair) repairs.add(g.id);
        break;
      }
    }
    off = rv.next;
  }
}

/**
 * Every valid batch header (of its segment's incarnation) after (si, pos) with seq >= expected:
 * the rest of the stopped segment, and the part of each later segment that can hold them.
 */
async function scanForward(segs: Segment[], si: number, pos: number, expected: number, data: Buffer, peek: (i: number) => Promise<Buffer>): Promise<Found[]> {
  const found: Found[] = [];
  for (let i = si; i < segs.length; i++) {
    const s = segs[i];
    const view = i === si ? data : await peek(i);
    for (let off = i === si ? pos + blockBytes : segmentHeaderBytes; off + batchHeaderBytes <= view.length; off += blockBytes) {
      const h = decodeBatchHeader(view, off, s.salt, s.segmentBytes, s.maxBatchBytes);
      if (h && (expected === -1 || h.batchSeq >= expected)) found.push({ segIndex: i, offset: off, seq: h.batchSeq });
    }
  }
  return found;
}

/** True when a batch header of this segment's incarnation sits anywhere after `pos`. */
async function hasBatchAfter(s: Segment, data: Buffer, pos: number): Promise<boolean> {
  for (let off = pos + blockBytes; off + batchHeaderBytes <= s.segmentBytes; off += blockBytes) {
    if (decodeBatchHeader(data, off, s.salt, s.segmentBytes, s.maxBatchBytes)) return true;
  }
  return false;
}

function looksEmpty(s: Segment, head: Buffer): boolean {
  return decodeBatchHeader(head, segmentHeaderBytes, s.salt, s.segmentBytes, s.maxBatchBytes) === null && isZeroHeader(head, segmentHeaderBytes);
}
