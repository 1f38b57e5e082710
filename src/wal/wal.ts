import { open as openHandle, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { assert } from '../common/assert.js';
import { Corruption, InvalidArgument, Unavailable } from '../common/errors.js';
import { type Logger, createLogger } from '../common/log.js';
import type { BlockFile, BlockIo } from '../io/types.js';
import { WalCompacted, WalFailed, WalIndexUnavailable } from './errors.js';
import {
  RecordKind,
  alignUp,
  batchHeaderBytes,
  blockBytes,
  decodeRecord,
  encodeBatchHeader,
  encodeRecord,
  maxBatchesInFlightLimit,
  metaFlagNeedsRepair,
  metaPayloadBytes,
  newRecordView,
  recordCrcSeed,
  recordHeaderBytes,
  recordSpanBytes,
  segmentFileName,
  segmentHeaderBytes,
  writeU64,
} from './format.js';
import { type GroupLog, GroupTable, PayloadCache } from './groups.js';
import { recoverLog } from './recovery.js';
import { type Segment, writeSegmentHeader } from './segment.js';
import { writeZeros } from '../io/zeros.js';
import type { WalEntry, WalHardState, WalOptions, WalRecoveryReport, WalSnapshotMeta } from './types.js';

export const defaultSegmentBytes = 64 << 20;
/** Idle segments kept for reuse: enough for the next rotations, not a burst's worth. */
export const defaultIdleSegmentsKept = 2;
export const defaultMaxBatchBytes = 1 << 20;
export const defaultCacheBytes = 64 << 20;
/** Zero-fill chunk when preallocating a segment. */
const zeroChunkBytes = 1 << 20;
/** Largest single read when fetching evicted entries back from a segment. */
const maxReadRunBytes = 4 << 20;

/** One batch: filled in memory, then written with one RWF_DSYNC write. */
interface Batch {
  buf: Buffer;
  seq: number;
  seg: Segment;
  fileOffset: number;
  used: number;
  count: number;
  bytes: number;
  seed: number;
  written: boolean;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Deferred {
  /** Makes progress; returns the promise to hand back once done, or null while still blocked. */
  run: () => Promise<void> | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Counters for benchmarks and metrics. */
export interface WalStats {
  batchesWritten: number;
  recordsWritten: number;
  bytesWritten: number;
  segmentsCreated: number;
  segmentsRecycled: number;
  segmentsRemoved: number;
}

/**
 * The write-ahead log. Every mutating call encodes its records into the batch being filled
 * and returns a promise that resolves once that batch is durable (batches become durable in
 * order, so awaiting the last promise covers all earlier calls). Calls made while a batch is in
 * flight go into the next one (group commit).
 *
 * The in-memory view (lastIndex, term, hardState, entries...) reflects a call as soon as it
 * returns, before it is durable; Raft hosts wait for the promise before sending what depends
 * on it. Entry payloads handed to `append` are kept by reference in the cache: do not modify
 * them afterwards.
 */
export class Wal {
  /** What recovery found: tail position, what was cut, corruption, groups needing repair. */
  readonly recovery: WalRecoveryReport;
  readonly stats: WalStats = { batchesWritten: 0, recordsWritten: 0, bytesWritten: 0, segmentsCreated: 0, segmentsRecycled: 0, segmentsRemoved: 0 };

  private readonly groups: GroupTable;
  private readonly cache: PayloadCache;
  private readonly live: Segment[];
  private spare: Segment | null;
  /** Preparing the spare or removing idle segments: one such task at a time. */
  private segmentWork: Promise<void> | null = null;
  /**
   * Compactions (checkpoints, snapshots) whose records are not durable yet, oldest first: the
   * batch holding each record and the oldest segment any group needed just before it. Until
   * that batch is durable, a crash would bring back the group's older compaction point, so
   * the segments from that floor on must stay (see idleSegments).
   */
  private readonly compactionHolds: { batchSeq: number; floorSeq: number }[] = [];
  private nextBatchSeq: number;
  private durableSeq: number;
  private readonly pool: Buffer[] = [];
  private openBatch: Batch | null = null;
  private readonly sealed: Batch[] = [];
  private readonly inflight: Batch[] = [];
  private readonly backlog: Deferred[] = [];
  private flushScheduled = false;
  private failure: Error | null = null;
  private closed = false;
  private readonly headerScratch: Buffer;
  private zeros: Buffer | null = null;
  private readonly rv = newRecordView();
  private readonly stepResult = { done: false, next: 0, promise: null as Promise<void> | null };

  private constructor(
    private readonly io: BlockIo,
    private readonly dir: string,
    private readonly log: Logger,
    private readonly segmentBytes: number,
    private readonly maxBatchBytes: number,
    private readonly maxRecordBytes: number,
    private readonly maxBatchesInFlight: number,
    private readonly idleSegmentsKept: number,
    cacheBytes: number,
    groups: GroupTable,
    recovered: { live: Segment[]; spare: Segment | null; nextBatchSeq: number; report: WalRecoveryReport },
  ) {
    this.groups = groups;
    this.cache = new PayloadCache(cacheBytes);
    this.live = recovered.live;
    this.spare = recovered.spare;
    this.nextBatchSeq = recovered.nextBatchSeq;
    this.durableSeq = recovered.nextBatchSeq - 1;
    this.recovery = recovered.report;
    // Buffers for the open batch, the in-flight ones, and one sealed batch waiting for a slot.
    const slab = io.allocAligned(maxBatchBytes * (maxBatchesInFlight + 2) + blockBytes);
    for (let i = 0; i < maxBatchesInFlight + 2; i++) this.pool.push(slab.subarray(i * maxBatchBytes, (i + 1) * maxBatchBytes));
    this.headerScratch = slab.subarray(slab.length - blockBytes);
  }

  /** Opens (creating if needed) the log in `options.dir` and recovers it. */
  static async open(options: WalOptions): Promise<Wal> {
    const segmentBytes = options.segmentBytes ?? defaultSegmentBytes;
    const maxBatchBytes = options.maxBatchBytes ?? defaultMaxBatchBytes;
    const maxBatchesInFlight = options.maxBatchesInFlight ?? 1;
    const maxRecordBytes = options.maxRecordBytes ?? maxBatchBytes - batchHeaderBytes - recordHeaderBytes - 8;
    if (segmentBytes % blockBytes || maxBatchBytes % blockBytes) throw new InvalidArgument('WAL segmentBytes and maxBatchBytes must be multiples of 4 KiB');
    if (segmentBytes < segmentHeaderBytes + maxBatchBytes || segmentBytes > 0xffff_f000) throw new InvalidArgument(`WAL segmentBytes ${segmentBytes} out of range`);
    if (maxBatchesInFlight < 1 || maxBatchesInFlight > maxBatchesInFlightLimit) throw new InvalidArgument(`WAL maxBatchesInFlight must be 1..${maxBatchesInFlightLimit}`);
    if (batchHeaderBytes + recordSpanBytes(maxRecordBytes) > maxBatchBytes) throw new InvalidArgument(`WAL maxRecordBytes ${maxRecordBytes} does not fit a batch of ${maxBatchBytes}`);
    const idleSegmentsKept = options.idleSegmentsKept ?? defaultIdleSegmentsKept;
    if (!Number.isSafeInteger(idleSegmentsKept) || idleSegmentsKept < 0) throw new InvalidArgument(`WAL idleSegmentsKept must be a non-negative integer, not ${idleSegmentsKept}`);
    const log = options.logger ?? createLogger('wal');
    const groups = new GroupTable();
    const recovered = await recoverLog(options.io, options.dir, groups, log);
    const wal = new Wal(options.io, options.dir, log, segmentBytes, maxBatchBytes, maxRecordBytes, maxBatchesInFlight, idleSegmentsKept, options.cacheBytes ?? defaultCacheBytes, groups, recovered);
    if (wal.live.length === 0) {
      await wal.prepareSpare();
      wal.live.push(wal.spare as Segment);
      wal.spare = null;
      wal.recovery.tail = { segmentSeq: wal.live[0].seq, offsetBytes: segmentHeaderBytes };
      wal.recovery.segments = 1;
    }
    wal.maintainSegments();
    const r = recovered.report;
    log.info('WAL open', {
      dir: options.dir,
      backend: options.io.kind,
      segments: wal.live.length,
      batches: r.batches,
      records: r.records,
      groups: groups.size,
      tail: r.tail,
      cut: r.cut,
      corruption: r.corruption,
      needsRepair: r.needsRepair,
    });
    return wal;
  }

  /**
   * Appends entries of one group; indexes must be consecutive and start at most at
   * lastIndex + 1. An entry at an index already held replaces it and everything after it
   * (Raft's conflicting suffix); entries at or below the compaction point are ignored.
   * Resolves when durable.
   */
  append(groupId: number, entries: readonly WalEntry[]): Promise<void> {
    const refused = this.refuse();
    if (refused) return refused;
    if (entries.length === 0) return this.sync();
    const g = this.groups.getOrCreate(groupId);
    const first = entries[0].index;
    for (let k = 0; k < entries.length; k++) {
      const e = entries[k];
      if (e.index !== first + k) return Promise.reject(new InvalidArgument(`group ${groupId}: entry indexes not consecutive at ${e.index}`));
      if (e.data.length > this.maxRecordBytes) return Promise.reject(new InvalidArgument(`group ${groupId}: entry ${e.index} of ${e.data.length} bytes exceeds maxRecordBytes ${this.maxRecordBytes}`));
      if (!(e.type >= 0 && e.type <= 255) || !Number.isSafeInteger(e.term) || e.term < 0) return Promise.reject(new InvalidArgument(`group ${groupId}: entry ${e.index} has a bad type or term`));
    }
    if (this.backlog.length === 0) {
      // Fast path, nothing queued before this call: no closure, no extra promise.
      if (first < 1 || first > g.lastIndex + 1) return Promise.reject(new InvalidArgument(`group ${groupId}: append at ${first} leaves a gap after ${g.lastIndex}`));
      const start = Math.max(0, g.baseIndex + 1 - first);
      if (start >= entries.length) return this.lastPromise() ?? Promise.resolve();
      const r = this.appendSome(g, entries, start);
      if (r.done) return r.promise as Promise<void>;
      return this.deferAppend(g, entries, r.next);
    }
    return this.deferAppend(g, entries, -1);
  }

  /**
   * Queues (the rest of) an append behind earlier blocked calls. With `start` -1 it is
   * validated against the state at the moment its records are encoded, so that queued calls
   * keep their order.
   */
  private deferAppend(g: GroupLog, entries: readonly WalEntry[], start: number): Promise<void> {
    const first = entries[0].index;
    return this.defer(() => {
      if (start === -1) {
        if (first < 1 || first > g.lastIndex + 1) return Promise.reject(new InvalidArgument(`group ${g.id}: append at ${first} leaves a gap after ${g.lastIndex}`));
        start = Math.max(0, g.baseIndex + 1 - first);
        if (start >= entries.length) return this.lastPromise() ?? Promise.resolve();
      }
      const r = this.appendSome(g, entries, start);
      start = r.next;
      return r.done ? (r.promise as Promise<void>) : null;
    });
  }

  /** Persists a group's hard state; resolves when durable. */
  saveHardState(groupId: number, state: WalHardState): Promise<void> {
    const refused = this.refuse();
    if (refused) return refused;
    if (![state.term, state.vote, state.commit].every((n) => Number.isSafeInteger(n) && n >= 0)) return Promise.reject(new InvalidArgument('hard state fields must be non-negative integers'));
    const hard = { term: state.term, vote: state.vote, commit: state.commit };
    return this.stageSmall(groupId, (g) => {
      g.hard = hard;
      return this.small(RecordKind.HardState, hard.term, hard.commit, hard.vote);
    });
  }

  /** Removes a group's entries at `fromIndex` and above; resolves when durable. */
  truncateSuffix(groupId: number, fromIndex: number): Promise<void> {
    const refused = this.refuse();
    if (refused) return refused;
    return this.stageSmall(groupId, (g) => {
      if (fromIndex <= g.baseIndex) return new WalCompacted(groupId, fromIndex);
      if (fromIndex > g.lastIndex) return null;
      g.truncateFrom(fromIndex);
      return this.small(RecordKind.Truncate, 0, fromIndex, 0);
    });
  }

  /**
   * Entries at or below `index` are no longer needed by the group (its state machine is
   * durable past them). Segments are recycled once every group's checkpoint has passed them.
   */
  checkpoint(groupId: number, index: number): Promise<void> {
    const refused = this.refuse();
    if (refused) return refused;
    return this.stageSmall(groupId, (g) => {
      const before = g.baseIndex;
      const floorSeq = this.oldestNeededSegment();
      const base = g.compactTo(index);
      if (base === before) return null;
      this.holdSegments(floorSeq);
      return this.small(RecordKind.Checkpoint, 0, base, 0);
    });
  }

  /**
   * The group's state now comes from a snapshot at (index, term): entries at or below it are
   * dropped (all entries, if the log does not hold that index with that term), and a
   * needs-repair flag is cleared. Resolves when durable.
   */
  installSnapshot(groupId: number, meta: WalSnapshotMeta): Promise<void> {
    const refused = this.refuse();
    if (refused) return refused;
    if (!Number.isSafeInteger(meta.index) || meta.index < 0 || !Number.isSafeInteger(meta.term) || meta.term < 0) return Promise.reject(new InvalidArgument('snapshot index/term must be non-negative integers'));
    return this.stageSmall(groupId, (g) => {
      const floorSeq = this.oldestNeededSegment();
      g.installSnapshot(meta.index, meta.term);
      this.holdSegments(floorSeq);
      return this.small(RecordKind.Snapshot, meta.term, meta.index, 0);
    });
  }

  /** Resolves when everything called so far is durable. */
  sync(): Promise<void> {
    const refused = this.failure ? Promise.reject(this.failure) : null;
    if (refused) return refused;
    if (this.backlog.length > 0) return this.defer(() => this.lastPromise() ?? Promise.resolve());
    return this.lastPromise() ?? Promise.resolve();
  }

  /**
   * Entries [lo, hi) of a group, at most `maxBytes` of payload but at least one entry. Recent
   * payloads come from a bounded cache, older ones are read back from the segments (checked
   * against their CRC). Throws WalCompacted when lo < firstIndex, WalIndexUnavailable when
   * hi > lastIndex + 1.
   */
  async entries(groupId: number, lo: number, hi: number, maxBytes = Infinity): Promise<WalEntry[]> {
    const g = this.groups.get(groupId);
    const base = g ? g.baseIndex : 0;
    const last = g ? g.lastIndex : 0;
    if (lo <= base) throw new WalCompacted(groupId, lo);
    if (hi > last + 1) throw new WalIndexUnavailable(groupId, hi);
    if (!g || lo >= hi) return [];
    const out: WalEntry[] = [];
    const missing: number[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const at = i - base - 1;
      const len = g.lens[at];
      if (out.length > 0 && bytes + len > maxBytes) break;
      bytes += len;
      const data = g.datas[at];
      out.push({ index: i, term: g.terms[at], type: g.types[at], data: data ?? emptyPayload });
      if (!data) missing.push(out.length - 1);
    }
    if (missing.length > 0) await this.readBack(g, out, missing);
    return out;
  }

  /** Term of the entry at `index` (firstIndex - 1 .. lastIndex), else undefined. */
  term(groupId: number, index: number): number | undefined {
    const g = this.groups.get(groupId);
    if (!g) return index === 0 ? 0 : undefined;
    return g.term(index);
  }

  /** First index held (compaction point + 1); 1 for a new group. */
  firstIndex(groupId: number): number {
    return this.groups.get(groupId)?.firstIndex ?? 1;
  }

  /** Last index held; firstIndex - 1 when the group holds no entries. */
  lastIndex(groupId: number): number {
    return this.groups.get(groupId)?.lastIndex ?? 0;
  }

  /** Last saved hard state; zeros for a new group. */
  hardState(groupId: number): WalHardState {
    const h = this.groups.get(groupId)?.hard;
    return h ? { ...h } : { term: 0, vote: 0, commit: 0 };
  }

  /** Last installed snapshot's metadata; {0, 0} if none. */
  snapshotMeta(groupId: number): WalSnapshotMeta {
    const g = this.groups.get(groupId);
    return g ? { index: g.snapIndex, term: g.snapTerm } : { index: 0, term: 0 };
  }

  /** True when recovery found this group's records damaged; cleared by installSnapshot. */
  needsRepair(groupId: number): boolean {
    return this.groups.get(groupId)?.needsRepair ?? false;
  }

  /** Every group that has state in the log. */
  groupIds(): number[] {
    return [...this.groups.all()].map((g) => g.id).sort((a, b) => a - b);
  }

  /** Segment files currently holding the log (oldest first), for tests and tools. */
  segmentSeqs(): number[] {
    return this.live.map((s) => s.seq);
  }

  /**
   * Segments from the oldest one that a group's entries still need to the newest: what a
   * checkpoint could free, unlike segmentSeqs, which also counts the segments no group needs
   * any more (they wait, one per rotation, to be recycled as the next segment). A host that
   * caps its WAL by segmentSeqs after a burst would find it over the cap forever.
   */
  segmentsInUse(): number {
    const oldest = this.oldestNeededSegment();
    if (oldest === Infinity) return Math.min(1, this.live.length);
    let n = 0;
    for (const seg of this.live) if (seg.seq >= oldest) n++;
    return n;
  }

  /** Bytes of entry payloads held in memory. */
  get cachedBytes(): number {
    return this.cache.cachedBytes;
  }

  /** Waits for in-flight batches, then closes the segment files. The BlockIo stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync().catch(() => undefined);
    this.closed = true;
    await this.segmentWork?.catch(() => undefined);
    for (const s of this.live) await s.file.close().catch(() => undefined);
    await this.spare?.file.close().catch(() => undefined);
  }

  // ---- staging -------------------------------------------------------------------------

  private refuse(): Promise<void> | null {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Unavailable('WAL is closed'));
    return null;
  }

  private appendSome(g: GroupLog, entries: readonly WalEntry[], start: number): { done: boolean; next: number; promise: Promise<void> | null } {
    const r = this.stepResult;
    let b: Batch | null = null;
    let i = start;
    for (; i < entries.length; i++) {
      const e = entries[i];
      const len = e.data.length;
      const nb = this.batchFor(recordSpanBytes(len));
      if (!nb) break;
      b = nb;
      const off = b.used;
      b.used = encodeRecord(b.buf, off, b.seed, RecordKind.Entry, e.type, g.id, e.term, e.index, 0, e.data, len);
      b.count++;
      const ok = g.put(e.index, e.term, e.type, b.seg.seq, b.fileOffset + off, len, b.seed, e.data);
      assert(ok, 'append validated contiguity');
      if (len > 0) this.cache.added(g, e.index, e.data);
    }
    if (b) this.scheduleFlush();
    r.done = i === entries.length;
    r.next = i;
    r.promise = r.done ? (b ? b.promise : (this.lastPromise() ?? Promise.resolve())) : null;
    return r;
  }

  /** What a small operation encodes: a header-only record (hard state, truncate, checkpoint, snapshot). */
  private readonly smallRecord = { kind: RecordKind.HardState, term: 0, index: 0, aux: 0 };

  private small(kind: RecordKind, term: number, index: number, aux: number): typeof this.smallRecord {
    const r = this.smallRecord;
    r.kind = kind;
    r.term = term;
    r.index = index;
    r.aux = aux;
    return r;
  }

  /**
   * Runs `apply` (which changes the group's in-memory state and says which record to write,
   * null for nothing, or an error) once a batch has room, then encodes the record. Queued
   * behind earlier blocked calls so that state changes and records keep the callers' order.
   */
  private stageSmall(groupId: number, apply: (g: GroupLog) => typeof this.smallRecord | Error | null): Promise<void> {
    const step = (): Promise<void> | null => {
      const b = this.batchFor(recordHeaderBytes);
      if (!b) return null;
      const r = apply(this.groups.getOrCreate(groupId));
      if (r instanceof Error) return Promise.reject(r);
      if (r === null) return this.lastPromise() ?? Promise.resolve();
      b.used = encodeRecord(b.buf, b.used, b.seed, r.kind, 0, groupId, r.term, r.index, r.aux, null, 0);
      b.count++;
      this.scheduleFlush();
      return b.promise;
    };
    if (this.backlog.length === 0) {
      const p = step();
      if (p) return p;
    }
    return this.defer(step);
  }

  /** The batch to put `span` bytes into, opening (and rolling segments) as needed; null when blocked. */
  private batchFor(span: number): Batch | null {
    const open = this.openBatch;
    if (open && open.used + span <= this.maxBatchBytes) return open;
    if (open) this.seal(open);
    const buf = this.pool.pop();
    if (!buf) return null;
    let seg = this.live[this.live.length - 1];
    if (
      seg.writeOffset + this.maxBatchBytes > seg.segmentBytes ||
      seg.maxBatchBytes !== this.maxBatchBytes ||
      seg.maxBatchesInFlight !== this.maxBatchesInFlight ||
      seg.segmentBytes !== this.segmentBytes
    ) {
      if (!this.spare) {
        this.pool.push(buf);
        this.maintainSegments();
        return null;
      }
      seg = this.spare;
      this.spare = null;
      this.live.push(seg);
      this.maintainSegments();
    }
    const seq = this.nextBatchSeq++;
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // callers that drop a promise must not crash the process
    const b: Batch = { buf, seq, seg, fileOffset: seg.writeOffset, used: batchHeaderBytes, count: 0, bytes: 0, seed: recordCrcSeed(seg.salt, seq), written: false, promise, resolve, reject };
    if (seg.firstBatchSeq === -1) {
      seg.firstBatchSeq = seq;
      this.encodeMeta(b);
      this.openBatch = b;
      // Metadata filled it: the record goes into the next batch, same segment.
      if (b.used + span > this.maxBatchBytes) return this.batchFor(span);
    }
    this.openBatch = b;
    return b;
  }

  /** Every group's state as the first records of a segment, so older segments can go. */
  private encodeMeta(b: Batch): void {
    const span = recordSpanBytes(metaPayloadBytes);
    assert(batchHeaderBytes + span * this.groups.size <= this.maxBatchBytes, `${this.groups.size} groups do not fit one batch of metadata`);
    for (const g of this.groups.all()) {
      const p = b.used + recordHeaderBytes;
      writeU64(b.buf, p, g.baseIndex);
      writeU64(b.buf, p + 8, g.baseTerm);
      writeU64(b.buf, p + 16, g.snapIndex);
      writeU64(b.buf, p + 24, g.snapTerm);
      b.buf.writeUInt32LE(g.needsRepair ? metaFlagNeedsRepair : 0, p + 32);
      b.buf.writeUInt32LE(0, p + 36);
      b.used = encodeRecord(b.buf, b.used, b.seed, RecordKind.Meta, 0, g.id, g.hard.term, g.hard.commit, g.hard.vote, null, metaPayloadBytes);
      b.count++;
    }
  }

  private seal(b: Batch): void {
    const bytes = alignUp(b.used, blockBytes);
    assert(bytes <= this.maxBatchBytes, 'batch exceeds maxBatchBytes');
    assert(b.fileOffset + bytes <= b.seg.segmentBytes, 'batch runs past its segment');
    b.buf.fill(0, b.used, bytes);
    encodeBatchHeader(b.buf, 0, { salt: b.seg.salt, batchBytes: bytes, batchSeq: b.seq, recordCount: b.count, usedBytes: b.used });
    b.bytes = bytes;
    b.seg.writeOffset = b.fileOffset + bytes;
    this.sealed.push(b);
    this.openBatch = null;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flush);
  }

  /** Writes sealed batches while slots are free, then the open one (group commit). */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.failure) return;
    while (this.inflight.length < this.maxBatchesInFlight) {
      let b = this.sealed.shift();
      if (!b) {
        const open = this.openBatch;
        if (!open || open.count === 0) break;
        this.seal(open);
        b = this.sealed.shift() as Batch;
      }
      this.write(b);
    }
  };

  private write(b: Batch): void {
    assert(this.inflight.length < this.maxBatchesInFlight, 'batches in flight over the limit');
    this.inflight.push(b);
    b.seg.file.pwrite(b.buf.subarray(0, b.bytes), b.fileOffset, true).then(
      () => {
        b.written = true;
        this.stats.batchesWritten++;
        this.stats.recordsWritten += b.count;
        this.stats.bytesWritten += b.bytes;
        this.completeWritten();
      },
      (err: unknown) => this.fail(err),
    );
  }

  /** Resolves batches in order: one is durable once it and all before it are written. */
  private completeWritten(): void {
    while (this.inflight.length > 0 && this.inflight[0].written) {
      const b = this.inflight.shift() as Batch;
      this.durableSeq = b.seq;
      this.pool.push(b.buf);
      b.resolve();
    }
    // A compaction now durable releases its hold, and may have left segments to reuse or remove.
    // Holds are taken in batch order, so the released ones are at the front.
    const holds = this.compactionHolds;
    if (holds.length > 0 && holds[0].batchSeq <= this.durableSeq) {
      while (holds.length > 0 && holds[0].batchSeq <= this.durableSeq) holds.shift();
      this.maintainSegments();
    }
    this.flush();
    this.drainBacklog();
  }

  private lastPromise(): Promise<void> | null {
    if (this.openBatch && this.openBatch.count > 0) {
      this.scheduleFlush();
      return this.openBatch.promise;
    }
    if (this.sealed.length > 0) return this.sealed[this.sealed.length - 1].promise;
    if (this.inflight.length > 0) return this.inflight[this.inflight.length - 1].promise;
    return null;
  }

  private defer(run: () => Promise<void> | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.backlog.push({ run, resolve, reject });
      this.flush();
    });
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0 && !this.failure) {
      const d = this.backlog[0];
      const p = d.run();
      if (!p) return;
      this.backlog.shift();
      p.then(d.resolve, d.reject);
    }
  }

  private fail(err: unknown): void {
    if (this.failure) return;
    const e = new WalFailed(`WAL write failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    this.failure = e;
    this.log.error('WAL write failed; the log is now read-only until restart', { err });
    for (const b of [...this.inflight, ...this.sealed]) b.reject(e);
    this.openBatch?.reject(e);
    this.inflight.length = 0;
    this.sealed.length = 0;
    this.openBatch = null;
    for (const d of this.backlog.splice(0)) d.reject(e);
  }

  // ---- segments ------------------------------------------------------------------------

  /**
   * Keeps a prepared spare segment ready for the next rotation and removes idle segments
   * beyond `idleSegmentsKept`, in the background, one task at a time. Appends blocked on a
   * full segment resume as soon as the spare is ready, before any removal.
   */
  private maintainSegments(): void {
    if (this.segmentWork || this.failure || this.closed) return;
    const prepare = this.spare === null;
    if (!prepare && this.idleSegments() <= this.idleSegmentsKept) return;
    this.segmentWork = (async () => {
      if (prepare) {
        await this.prepareSpare();
        this.drainBacklog();
        this.flush();
      }
      await this.removeIdleSegments();
    })().then(
      () => {
        this.segmentWork = null;
        // A rotation may have used the spare meanwhile (appends wait for the next one); idle
        // segments left by checkpoints meanwhile wait for the next checkpoint's call.
        if (this.spare === null) this.maintainSegments();
      },
      (err: unknown) => {
        this.segmentWork = null;
        this.fail(err);
      },
    );
  }

  /** The oldest segment a group's entries are in (Infinity if none). */
  private oldestNeededSegment(): number {
    let oldest = Infinity;
    for (const g of this.groups.all()) if (g.segs.length > 0 && g.segs[0] < oldest) oldest = g.segs[0];
    return oldest;
  }

  /** Called from a compaction's staging: its record is in the open batch. */
  private holdSegments(floorSeq: number): void {
    assert(this.openBatch !== null, 'a compaction record is staged in the open batch');
    const holds = this.compactionHolds;
    assert(holds.length === 0 || holds[holds.length - 1].batchSeq <= this.openBatch.seq, 'compaction holds are taken in batch order');
    holds.push({ batchSeq: this.openBatch.seq, floorSeq });
    this.maintainSegments();
  }

  /**
   * Leading segments that no group needs, by the durable compaction records only, and whose
   * place as the log's start a later segment can take: one holding a durable batch, whose first
   * batch carries every group's metadata.
   */
  private idleSegments(): number {
    // The lowest floor of every pending hold (completeWritten releases the durable ones): the
    // oldest hold's floor is not always the lowest (one taken while no group had entries has
    // none), and the holds are few.
    let oldestNeeded = this.oldestNeededSegment();
    for (const h of this.compactionHolds) if (h.floorSeq < oldestNeeded) oldestNeeded = h.floorSeq;
    let lastStart = -1;
    for (let i = this.live.length - 1; i > 0; i--) {
      const s = this.live[i];
      if (s.firstBatchSeq !== -1 && this.durableSeq >= s.firstBatchSeq && s.seq <= oldestNeeded) {
        lastStart = i;
        break;
      }
    }
    return Math.max(0, lastStart);
  }

  /**
   * Removes the oldest idle segments until `idleSegmentsKept` remain: the log then starts at
   * a later segment, as after recycling. Only from the front, so the segments left stay
   * consecutive; a file that cannot be removed stays in the log (it is still valid log). Idle
   * counts durable compactions only: a crash never brings back a group whose entries are gone.
   */
  private async removeIdleSegments(): Promise<void> {
    let removed = 0;
    while (!this.closed && this.idleSegments() > this.idleSegmentsKept) {
      const seg = this.live[0];
      try {
        await rm(seg.path);
      } catch (err) {
        this.log.warn('WAL could not remove an idle segment; it stays in the log', { segment: seg.seq, error: String(err) });
        break;
      }
      this.live.shift();
      // Counted with the shift, so the counter never lags the segments it describes.
      this.stats.segmentsRemoved++;
      removed++;
      await seg.file.close().catch(() => undefined);
    }
    if (removed > 0) {
      await syncDir(this.dir);
      this.log.info('WAL removed idle segments', { removed, firstSegment: this.live[0]?.seq });
    }
  }

  /** Makes the next segment: recycles the oldest if possible, else writes a new file of zeros. */
  private async prepareSpare(): Promise<void> {
    const seq = this.live.length > 0 ? this.live[this.live.length - 1].seq + 1 : 1;
    const path = join(this.dir, segmentFileName(seq));
    let seg: Segment;
    // The oldest segment can be reused once it is idle (and of the current size).
    if (this.live.length > 0 && this.live[0].segmentBytes === this.segmentBytes && this.idleSegments() > 0) {
      seg = this.live.shift() as Segment;
      // The header is rewritten with a new salt right after: whatever the file holds from its
      // previous life can never be read as log again. A crash in between leaves a file whose
      // header does not match its name, which recovery removes.
      await rename(seg.path, path);
      seg.path = path;
      seg.seq = seq;
      this.stats.segmentsRecycled++;
    } else {
      const file: BlockFile = await this.io.open(path, { create: true });
      seg = { seq, salt: 0, path, file, segmentBytes: this.segmentBytes, maxBatchBytes: this.maxBatchBytes, maxBatchesInFlight: this.maxBatchesInFlight, writeOffset: segmentHeaderBytes, firstBatchSeq: -1 };
      // Zeros, not fallocate: overwriting written blocks later is cheaper for the filesystem
      // than converting unwritten extents at every sync.
      this.zeros ??= this.io.allocAligned(zeroChunkBytes);
      await writeZeros(file, this.zeros, 0, this.segmentBytes);
      await file.fdatasync();
      this.stats.segmentsCreated++;
    }
    seg.maxBatchBytes = this.maxBatchBytes;
    seg.maxBatchesInFlight = this.maxBatchesInFlight;
    await writeSegmentHeader(this.io, seg, this.headerScratch);
    await syncDir(this.dir);
    if (this.closed) {
      await seg.file.close();
      return;
    }
    this.spare = seg;
  }

  // ---- reading back --------------------------------------------------------------------

  /** Fills entries whose payload is not cached by reading their records from the segments. */
  private async readBack(g: GroupLog, out: WalEntry[], missing: number[]): Promise<void> {
    // A record is only read back once durable; the group may have moved meanwhile.
    if (this.inflight.length > 0 || this.sealed.length > 0 || this.openBatch) await this.sync();
    const base = g.baseIndex;
    for (const m of missing) if (out[m].index <= base) throw new WalCompacted(g.id, out[m].index);
    for (const m of missing) if (out[m].index > g.lastIndex) throw new WalIndexUnavailable(g.id, out[m].index);
    let k = 0;
    while (k < missing.length) {
      // A run: consecutive missing entries of one segment within maxReadRunBytes.
      const first = out[missing[k]].index - base - 1;
      const seg = this.live.find((s) => s.seq === g.segs[first]);
      if (!seg) throw new Corruption(`group ${g.id}: segment ${g.segs[first]} of entry ${out[missing[k]].index} is gone`);
      const start = Math.floor(g.offs[first] / blockBytes) * blockBytes;
      let end = alignUp(g.offs[first] + recordHeaderBytes + g.lens[first], blockBytes);
      let j = k + 1;
      while (j < missing.length) {
        const at = out[missing[j]].index - base - 1;
        const e = alignUp(g.offs[at] + recordHeaderBytes + g.lens[at], blockBytes);
        if (g.segs[at] !== seg.seq || g.offs[at] < start || e - start > maxReadRunBytes) break;
        end = Math.max(end, e);
        j++;
      }
      const buf = this.io.allocAligned(end - start);
      const n = await seg.file.pread(buf, start);
      for (let m = k; m < j; m++) {
        const entry = out[missing[m]];
        const at = entry.index - base - 1;
        const off = g.offs[at] - start;
        const why = off + recordHeaderBytes + g.lens[at] > n ? 'short read' : decodeRecord(buf, off, off + recordHeaderBytes + g.lens[at], g.seeds[at], this.rv);
        if (why || this.rv.kind !== RecordKind.Entry || this.rv.index !== entry.index || this.rv.groupId !== g.id) {
          throw new Corruption(`group ${g.id}: entry ${entry.index} in segment ${seg.seq} at ${g.offs[at]} unreadable: ${why ?? 'record mismatch'}`);
        }
        entry.data = Buffer.from(buf.subarray(this.rv.payloadOffset, this.rv.payloadOffset + this.rv.payloadBytes));
      }
      k = j;
    }
  }
}

const emptyPayload = new Uint8Array(0);

async function syncDir(dir: string): Promise<void> {
  const h = await openHandle(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}
