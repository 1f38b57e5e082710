/**
 * The PG state machine: the extents of every volume that hash to this PG, one sparse data file
 * per (PG replica, volume) at the volume's own byte offsets, written through BlockIo with
 * 4 KiB-aligned buffers (O_DIRECT on io_uring). Holes are real holes (punched on TRIM, cut off
 * past a shrunk volume's end), so BLOCK_STATUS comes from the file's allocation (SEEK_DATA /
 * SEEK_HOLE).
 *
 * Applied data is written behind (write-behind.ts): apply puts the blocks in a dirty map and
 * returns; a flusher writes them in sorted, merged batches; reads overlay the dirty blocks.
 *
 * Applying is sequential per PG and deterministic: every replica that applies the same
 * entries in the same order holds the same bytes. Durability of applied data is the WAL's
 * job until `checkpoint()`: it flushes the dirty blocks, fdatasyncs the data files, then
 * persists the applied index with the dedupe window (checkpoint-file.ts: one file, written to a
 * temp file, fsynced, renamed), and only then may the caller let the WAL drop the entries up
 * to that index.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, unlink } from 'node:fs/promises';
import { readFileIfExists, writeFileDurably } from '../common/durable-file.js';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { assert } from '../common/assert.js';
import { Corruption, IoError, ProtocolError, SnapshotSourceChanged, Unavailable } from '../common/errors.js';
import type { BlockExtent } from '../nbd/backend.js';
import { extentRuns } from '../io/extent-runs.js';
import { type BlockFile, type BlockIo, ExtentKind } from '../io/types.js';
import { isUnsupportedByFilesystem, writeZeros as writeZerosOver } from '../io/zeros.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint-file.js';
import { decodeOp, farOffsetsFromBytes, OpKind, StoreOpsLevel, storeOpsLevel, storeOpsLevelOfCommand } from './ops.js';
import { RecentRequests } from './recent-requests.js';
import { filesMayReach, SpannedFile, unlinkVolumeFiles, volumeOfFileName, volumesIn } from './spanned-file.js';
import { DirtyCache, WriteBehindBudget, type WriteBehindBudgetOptions, type WriteBehindOptions } from './write-behind.js';

export const storeBlockBytes = 4096;
/** Snapshot images and scratch buffers move data in chunks of this size. */
export const storeChunkBytes = 1024 * 1024;
/** Free buffers kept per size class (one per request in flight on the node, roughly). */
const maxFreeScratchPerClass = 64;
const maxFreeScratchBytesPerClass = 8 * 1024 * 1024;

export interface StoreMeta {
  appliedIndex: number;
  appliedTerm: number;
}

/**
 * Request keys remembered per PG for deduplication (first in, first out). A gateway retries a
 * request for at most ~30 s, so this covers the retries of every PG not writing more than
 * ~500 requests per second; it is part of the replicated state (checkpoints, snapshots).
 */
export const dedupeWindowRequests = 16384;
/**
 * Present from the moment a snapshot restore starts replacing the data files until its index
 * is recorded in its checkpoint: a store that opens with it holds part of an image under an older
 * applied index (see PgStore.holdsPartialImage).
 */
export const restoreMarkerFile = 'restoring';
/** The restore marker's text when a rebuild was asked for (markForRebuild). */
const rebuildAskedText = 'a rebuild from the leader was asked for\n';

const packr = new Packr({ useRecords: false });

function alignDown(x: number): number {
  return x - (x % storeBlockBytes);
}
function alignUp(x: number): number {
  return Math.ceil(x / storeBlockBytes) * storeBlockBytes;
}

/**
 * Reusable aligned buffers in power-of-two size classes (4 KiB and up): nothing is allocated
 * per request once warm, and a 4 KiB write never pays for a large buffer.
 */
export class ScratchPool {
  private readonly free = new Map<number, Buffer[]>();
  /** Dirty applied data of every store that shares this pool (one pool per node). */
  readonly writeBehind: WriteBehindBudget;
  private zeroChunk: Buffer | undefined;
  constructor(private readonly io: BlockIo, writeBehind: WriteBehindBudgetOptions = {}) {
    this.writeBehind = new WriteBehindBudget(io, writeBehind);
  }

  /**
   * An aligned chunk of zeros (storeChunkBytes), made once and shared by the node: the source
   * of writes of zeros. Nothing ever writes into it.
   */
  zeros(): Buffer {
    return (this.zeroChunk ??= this.io.allocAligned(storeChunkBytes));
  }

  private static classOf(lengthBytes: number): number {
    let c = storeBlockBytes;
    while (c < lengthBytes) c *= 2;
    return c;
  }

  acquire(lengthBytes: number): Buffer {
    const c = ScratchPool.classOf(lengthBytes);
    const list = this.free.get(c);
    const buf = list?.pop();
    return buf ?? this.io.allocAligned(c);
  }

  release(buf: Buffer): void {
    let list = this.free.get(buf.length);
    if (!list) this.free.set(buf.length, (list = []));
    // Small buffers are kept generously, large ones up to a few MiB per class.
    if (list.length < Math.min(maxFreeScratchPerClass, Math.max(4, maxFreeScratchBytesPerClass / buf.length))) list.push(buf);
  }
}

export interface ImageCursor {
  volumeId: number;
  offset: number;
}

export interface ImageChunk {
  runs: [number, number, Uint8Array][];
  /**
   * Allocated zeros ([volume, offset, length], aligned): ranges a NO_HOLE zero left allocated
   * (unwritten extents), which SEEK_DATA calls holes. Restored allocated, so a replica rebuilt
   * from the image answers BLOCK_STATUS as its source does. Absent from a source of an earlier
   * version (they restore as holes, as before); a puller of one ignores them.
   */
  zeros?: [number, number, number][];
  next: ImageCursor | null;
  recent?: Uint8Array;
  /**
   * The identity of the state the chunk was read from (PgStore.imageId). Absent from a source
   * of an earlier version, which checks nothing between chunks.
   */
  image?: string;
}

/**
 * Asks an image's source for one chunk: the first (cursor null), or the one at `cursor` of the
 * image named `image` (the first chunk's identity; undefined when its source gave none).
 */
export type ImageChunkFetch = (cursor: ImageCursor | null, image: string | undefined) => Promise<ImageChunk>;

/** The longest image identity a source takes in a chunk request (PgStore.imageId: 16 hex digits, a dot and a count). */
export const maxImageIdChars = 64;
/** Most allocated-zero ranges one image chunk carries (24 bytes each in its head). */
export const maxImageZeroRangesPerChunk = 4096;
/** Runs asked of a file's extent map per call while an image is read. */
const imageMapRunsPerCall = 256;

function imageIdOf(openId: string, restoresBegun: number): string {
  return `${openId}.${restoresBegun}`;
}

/** An image chunk's allocated zeros, checked: a peer's malformed ranges are refused before anything is zeroed. */
function checkedImageZeros(zeros: unknown): [number, number, number][] {
  if (zeros === undefined || zeros === null) return [];
  if (!Array.isArray(zeros)) throw new ProtocolError('image chunk: allocated zeros are not a list');
  for (const z of zeros) {
    const ok =
      Array.isArray(z) &&
      z.length === 3 &&
      z.every((v) => Number.isSafeInteger(v) && v >= 0) &&
      z[0] >= 1 &&
      z[0] <= 0xffffffff &&
      z[2] > 0 &&
      z[1] % storeBlockBytes === 0 &&
      z[2] % storeBlockBytes === 0 &&
      z[1] + z[2] <= Number.MAX_SAFE_INTEGER;
    if (!ok) throw new ProtocolError(`image chunk: malformed allocated-zero range ${JSON.stringify(z)}`);
  }
  return zeros as [number, number, number][];
}

/** Extents in one block status answer at most (see allocation). */
const blockStatusMaxExtents = 4096;
/**
 * Runs asked of a file's extent map per call while looking for the end of a hole (nextData):
 * neighbouring holes are one run, so the first call nearly always holds the hole and what ends it.
 */
const nextDataRunsPerCall = 16;

export class PgStore {
  readonly groupId: number;
  readonly dir: string;
  private readonly io: BlockIo;
  private readonly scratch: ScratchPool;
  private readonly files = new Map<number, SpannedFile>();
  /** Applied blocks not yet written to the data files (see write-behind.ts). */
  private readonly dirty: DirtyCache;
  private meta: StoreMeta;
  private durable: StoreMeta;
  /** The checkpoint was read from an older version's meta.json and dedupe.bin (removed at the next one). */
  private legacyCheckpoint = false;
  /**
   * The store command level this store applies (ops.ts StoreOpsLevel): this build's, or a lower
   * one a node told to stand for an earlier build (a rolling upgrade's tests). A command above
   * it stops the node at its apply, as it stops a node of that build (an unknown op).
   */
  private appliedOpsLevel: number = storeOpsLevel;
  /** Request keys applied recently, oldest first. */
  private readonly recent = new RecentRequests(dedupeWindowRequests);
  /** The dedupe window of an image being restored, loaded when the restore ends. */
  private restoredRecent: Uint8Array | undefined;
  private closed = false;
  /**
   * The files hold part of an image: a restore is under way, or a crash cut one short (the
   * restore marker was there at open; see holdsPartialImage).
   */
  private restoring = false;
  /** The restore marker at open was an operator's rebuild (markForRebuild), not a restore's. */
  private rebuildAsked = false;
  /** Restores begun on this store (see restoresBegun). */
  private restoresBegunCount = 0;
  /**
   * Tells this open store from every other one, here or on any node: part of imageId, which
   * must change when the store is closed and opened again (a node restarted, a replica resumed
   * after a rebuild or a rejoin). The reopened store starts from its last checkpoint, behind
   * what it may have served before, and counts its restores from zero again.
   */
  private readonly openId = randomBytes(8).toString('hex');
  /**
   * Volumes deleted from the cluster map (see dropVolume): their files are gone and are never
   * opened or created again, so commands for them still in the log change nothing.
   */
  private readonly dropped = new Set<number>();
  /** Operations using each open file; a dropped volume's file is closed when its last ends. */
  private readonly pins = new Map<BlockFile, number>();
  /**
   * Files of dropped volumes still pinned by an operation in flight, with their volume ids. Such
   * an operation may make a span file after the drop unlinked the volume's files (a zero far
   * in): the last unpin unlinks them again, so none is left behind until the next start.
   */
  private readonly retired = new Map<BlockFile, number>();
  /** closeRetired runs in progress (close() waits for them). */
  private readonly retiring = new Set<Promise<void>>();
  /**
   * Wake those waiting for the last pin to go (see pinsReleased): a restore, and close(), which
   * may run while a restore waits.
   */
  private pinWaiters: (() => void)[] = [];
  /**
   * Moves whenever the data files are replaced (a restore removes them) or the store closes:
   * an open() that started under another value may have opened a file that is gone since
   * (unlinked: writes to it are lost at the next start), so file() does not keep it.
   */
  private fileGeneration = 0;
  /** A restore's removal of the data files, while it runs: file() hands out no file meanwhile. */
  private filesRemoval: Promise<void> | null = null;
  /**
   * The first failed fdatasync of a data file. Linux reports a failed writeback once and marks
   * the pages clean, so the next sync succeeds over data that never reached the disk: every
   * later sync is refused with this error (the node stops and replays the WAL from the last
   * good checkpoint). A restore clears it: it replaces every data file.
   */
  private syncFailure: Error | null = null;
  /** checkpoint() calls under way (a restore must not begin under one). */
  private checkpointsRunning = 0;
  /**
   * The data files' filesystem refused the fallocate mode (EOPNOTSUPP): zeros are written
   * instead, without asking again at every apply. One store's files share one filesystem.
   */
  private cannotZeroRange = false;
  private cannotPunch = false;

  private constructor(io: BlockIo, scratch: ScratchPool, dir: string, groupId: number, meta: StoreMeta, options: WriteBehindOptions) {
    this.io = io;
    this.dirty = new DirtyCache(scratch.writeBehind, (volumeId) => this.files.get(volumeId), options);
    this.scratch = scratch;
    this.dir = dir;
    this.groupId = groupId;
    this.meta = { ...meta };
    this.durable = { ...meta };
  }

  /** Opens (creating if needed) the store of one PG replica in `dir`. */
  static async open(io: BlockIo, scratch: ScratchPool, dir: string, groupId: number, options: WriteBehindOptions = {}): Promise<PgStore> {
    await mkdir(dir, { recursive: true });
    const ckpt = await readCheckpoint(dir);
    const store = new PgStore(io, scratch, dir, groupId, { appliedIndex: ckpt.appliedIndex, appliedTerm: ckpt.appliedTerm }, options);
    store.legacyCheckpoint = ckpt.legacy;
    const marker = await readFileIfExists(join(dir, restoreMarkerFile));
    store.restoring = marker !== undefined;
    store.rebuildAsked = marker !== undefined && marker.toString('utf8') === rebuildAskedText;
    store.recent.load(ckpt.recent, ckpt.appliedIndex);
    return store;
  }

  get appliedIndex(): number {
    return this.meta.appliedIndex;
  }

  /**
   * Whether a retried request, first sent once the log's entries up to `notBefore` were known,
   * would still be recognised at apply if its first attempt applied, with the log now ending
   * at `lastLogIndex` (every entry in between may apply first). RecentRequests.coversRetry.
   */
  coversRetry(notBefore: number, lastLogIndex: number): boolean {
    return this.recent.coversRetry(notBefore, Math.max(0, lastLogIndex - this.meta.appliedIndex));
  }

  /**
   * The files hold part of a snapshot image: a restore is under way, or one was when this
   * store last ran and a crash cut it short. In the second case (asked right after open,
   * before this process could start a restore of its own) the data files were wiped and
   * partly refilled while the checkpoint still names the applied index from before: replaying the
   * log from that index would not bring back what the wipe removed, so the replica must be
   * rebuilt from its leader (PgMover) and never take part as it is. In either case there is
   * no state to serve or checksum: reads are refused (assertStateReadable). A completed restore (`finishRestore`, `restoreImage`)
   * clears the mark.
   */
  get holdsPartialImage(): boolean {
    return this.restoring;
  }

  /**
   * How many restores have begun on this store, counted the moment beginRestore is called. A
   * reader of the whole state (a digest) that finds it moved read files a restore was wiping
   * and refilling, which the applied index does not show: it keeps its old value until the
   * restore ends, and may end where it was (a rebuild to the index the replica had).
   */
  get restoresBegun(): number {
    return this.restoresBegunCount;
  }

  /**
   * The identity of the state an image is read from: this open store, and the restores begun
   * on it. Entries applied between two chunks of an image keep it: every block a chunk reads
   * is then at or past the snapshot's index, and the puller's replay of the log from there
   * brings each to the same end (as it does a block read before an entry changed it). A restore
   * (whose image may lie elsewhere in the log, or start another history after a PG reset) or a
   * reopen (back to its last checkpoint, maybe before the snapshot's index) changes it: chunks
   * read before and after would assemble a state no replay repairs.
   */
  get imageId(): string {
    return imageIdOf(this.openId, this.restoresBegunCount);
  }

  /** Why holdsPartialImage was true at open: a restore cut short, or a rebuild asked for. */
  get partialImageCause(): 'restore' | 'rebuild' {
    return this.rebuildAsked ? 'rebuild' : 'restore';
  }

  /**
   * Marks the closed store in `dir` as holding no state to trust, durably: the replica opened
   * from it next is rebuilt from its leader (as after a restore cut short; see
   * holdsPartialImage). For a replica whose bytes differ from its peers' (`pool repair`).
   */
  static async markForRebuild(dir: string): Promise<void> {
    await writeFileDurably(join(dir, restoreMarkerFile), rebuildAskedText);
  }

  /** Marks a restore as started, durably, before anything is replaced. */
  private async markRestoring(): Promise<void> {
    await writeFileDurably(join(this.dir, restoreMarkerFile), 'a snapshot restore is under way\n');
  }

  /**
   * Clears the restore mark, once the image and its index are durable (or an operator-free
   * recovery found them complete). A mark that a crash keeps after this point only costs a
   * rebuild that was not needed.
   */
  async clearRestoreMark(): Promise<void> {
    await rm(join(this.dir, restoreMarkerFile), { force: true });
    this.restoring = false;
  }
  get appliedTerm(): number {
    return this.meta.appliedTerm;
  }
  /** The applied index that survives a crash without the WAL. */
  get durableIndex(): number {
    return this.durable.appliedIndex;
  }

  /**
   * The open file of a volume, pinned: the caller must unpin it when done. Undefined when it
   * does not exist and `create` is false, or when the volume was dropped. Refused (Unavailable)
   * while a restore removes the data files: it waits for every pin to go before it closes them,
   * so handing one out would keep it waiting, and a caller that waited here for the removal
   * while holding a pin (an image's read, a partial zero's write) would wait for itself.
   */
  private async file(volumeId: number, create: boolean): Promise<SpannedFile | undefined> {
    for (;;) {
      if (this.closed) throw new Unavailable(`PG ${this.groupId}: store closed`);
      if (this.dropped.has(volumeId)) return undefined;
      if (this.filesRemoval) throw new Unavailable(`PG ${this.groupId}: a snapshot restore is removing the data files`);
      const open = this.files.get(volumeId);
      if (open) return this.pin(open);
      const generation = this.fileGeneration;
      let f: SpannedFile;
      try {
        f = await SpannedFile.open(this.io, this.dir, volumeId, create);
      } catch (err) {
        if (generation !== this.fileGeneration) continue; // asked of files since replaced
        if (!create && err instanceof IoError && err.errno === 2) return undefined;
        throw err;
      }
      if (generation !== this.fileGeneration) {
        // A restore removed the data files (or the store closed) while this opened: the file
        // opened may be the one removed since, and whatever were written to it would be lost
        // at the next start. Asked again of the files as they are now.
        await f.close();
        continue;
      }
      return this.adopt(volumeId, f);
    }
  }

  /** Keeps a freshly opened file of a volume (unless another open or a drop came first), pinned. */
  private async adopt(volumeId: number, f: SpannedFile): Promise<SpannedFile | undefined> {
    const raced = this.files.get(volumeId);
    if (raced) {
      // Pinned before anything is awaited: a close or restore waiting for pins meanwhile would
      // otherwise close it under the caller's I/O.
      this.pin(raced);
      try {
        await f.close();
      } catch (err) {
        this.unpin(raced);
        throw err;
      }
      return raced;
    }
    if (this.dropped.has(volumeId)) {
      await f.close();
      // Dropped while opening (and maybe created by this open): remove it again.
      await unlinkVolumeFiles(this.dir, volumeId).catch(() => undefined);
      return undefined;
    }
    this.files.set(volumeId, f);
    return this.pin(f);
  }

  private pin<F extends BlockFile>(f: F): F {
    this.pins.set(f, (this.pins.get(f) ?? 0) + 1);
    return f;
  }

  private unpin(f: BlockFile): void {
    const n = (this.pins.get(f) ?? 1) - 1;
    if (n > 0) {
      this.pins.set(f, n);
      return;
    }
    this.pins.delete(f);
    const droppedVolumeId = this.retired.get(f);
    if (droppedVolumeId !== undefined) {
      this.retired.delete(f);
      const run = this.closeRetired(f, droppedVolumeId).catch(() => undefined);
      this.retiring.add(run);
      void run.then(() => this.retiring.delete(run));
    }
    if (this.pins.size === 0 && this.pinWaiters.length > 0) {
      const waiters = this.pinWaiters;
      this.pinWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  private async closeRetired(f: BlockFile, volumeId: number): Promise<void> {
    await f.close();
    await unlinkVolumeFiles(this.dir, volumeId);
  }

  /**
   * Resolves once no operation holds a pin: each then ended on the file it pinned, and none of
   * its I/O is left for the device to carry out on that file's descriptor. For a restore and
   * close(), which close every data file while file() hands out none (filesRemoval, closed).
   */
  private async pinsReleased(): Promise<void> {
    while (this.pins.size > 0) await new Promise<void>((resolve) => this.pinWaiters.push(resolve));
  }

  /**
   * Refuses (Unavailable: callers ask again, later or elsewhere) a read of the store's state
   * while a restore is under way or cut one short (holdsPartialImage), or when one began since
   * `restoresBefore` (restoresBegun when the read started): the files then hold no state of the
   * PG, or the read spans two (a restore drops the dirty blocks, then replaces the files). A
   * read that does not see one begun here in the synchronous step that issues its I/O ends on
   * files the restore closes only once it has (it waits for their pins).
   */
  private assertStateReadable(restoresBefore: number, what: string): void {
    if (this.restoring || this.restoresBegunCount !== restoresBefore) {
      throw new Unavailable(`PG ${this.groupId}: restoring a snapshot, ${what} refused`);
    }
  }

  /**
   * Forgets a volume that the cluster map deleted: closes its file (once no operation uses it)
   * and unlinks it. Idempotent; after it, the volume reads as zeros and commands for it that
   * are still in the log (or replayed from the WAL after a restart) change nothing.
   *
   * Replicas drop a volume when their own map shows the delete, not at one log index, so for a
   * while one replica may hold a deleted volume's data that another does not. That never
   * shows: volume ids are never reused, and nothing reads a deleted volume (the gateway and the
   * serving leader refuse its I/O, digests and snapshots cover only files that exist), and
   * every replica drops it once its map has the delete (at start too, from its cached map).
   * Everything else the entries carry (applied index, request keys) stays deterministic.
   */
  async dropVolume(volumeId: number): Promise<boolean> {
    if (this.dropped.has(volumeId)) return false;
    this.dropped.add(volumeId);
    // Its dirty blocks go, after the batch in flight (which may write to its file) completes.
    await this.dirty.exclusive(async () => this.dirty.dropRange(volumeId, 0, Number.POSITIVE_INFINITY));
    const f = this.files.get(volumeId);
    if (f) {
      this.files.delete(volumeId);
      if (this.pins.has(f)) this.retired.set(f, volumeId);
      else await f.close();
    }
    return (await unlinkVolumeFiles(this.dir, volumeId)) || f !== undefined;
  }

  /** Makes this store apply only commands up to `level`, as a node of an earlier build does. */
  applyOnlyUpToLevel(level: number): void {
    assert(Number.isSafeInteger(level) && level >= 1 && level <= storeOpsLevel, `store command level ${level} out of range`);
    this.appliedOpsLevel = level;
  }

  /**
   * Applies one committed entry. An empty entry (a leader's no-op) only moves the applied
   * index. Entries at or below the applied index were applied before a restart: skipped.
   */
  async apply(index: number, term: number, data: Uint8Array): Promise<void> {
    assert(!this.closed, 'apply on a closed store');
    if (this.dirty.failure) throw this.dirty.failure;
    if (index <= this.meta.appliedIndex) return;
    assert(index === this.meta.appliedIndex + 1, `apply of ${index} after ${this.meta.appliedIndex} leaves a gap`);
    if (data.byteLength > 0) {
      if (this.appliedOpsLevel < storeOpsLevel && storeOpsLevelOfCommand(data) > this.appliedOpsLevel) {
        throw new Corruption(`group ${this.groupId}: entry ${index} holds a store command of level ${storeOpsLevelOfCommand(data)}, and this node applies up to level ${this.appliedOpsLevel} (an unknown op to its build)`);
      }
      const op = decodeOp(data);
      // A retried request whose first proposal also committed: applied once only.
      if (this.recent.has(op.requestKey)) {
        this.meta.appliedIndex = index;
        this.meta.appliedTerm = term;
        return;
      }
      switch (op.kind) {
        case OpKind.Write:
          await this.writeRange(op.volumeId, op.offset, op.data!);
          break;
        case OpKind.Trim:
        case OpKind.Zero:
          await this.zeroRange(op.volumeId, op.offset, op.length, true);
          break;
        case OpKind.ZeroNoHole:
          await this.zeroRange(op.volumeId, op.offset, op.length, false);
          break;
        case OpKind.DiscardFrom:
          await this.discardFrom(op.volumeId, op.offset);
          break;
      }
      // Remembered only now that the data is in place, in the same synchronous step as the
      // applied index: a checkpoint or snapshot image taken while the apply above awaited I/O
      // must not hold the key without the data and with an applied index before the entry
      // (a replay from that index would skip the entry as a duplicate, losing the write).
      // Checking first and remembering last is safe: applies of a PG run one at a time.
      this.recent.remember(op.requestKey, index);
    }
    this.meta.appliedIndex = index;
    this.meta.appliedTerm = term;
  }

  /** Moves the applied index without data (an entry this state machine does not own). */
  skip(index: number, term: number): void {
    if (index <= this.meta.appliedIndex) return;
    this.meta.appliedIndex = index;
    this.meta.appliedTerm = term;
  }

  /**
   * Sets a range to `data` in the dirty map (write-behind): each block touched gets a new
   * buffer holding its newest content. A partial head or tail block starts from the block's
   * newest version: the dirty one, or else the disk's (a block that is not dirty is on disk).
   */
  private async writeRange(volumeId: number, offset: number, data: Uint8Array): Promise<void> {
    if (data.byteLength === 0) return;
    const f = await this.file(volumeId, true);
    if (!f) return; // a dropped volume
    try {
      const end = offset + data.byteLength;
      const first = Math.floor(offset / storeBlockBytes);
      const last = Math.floor((end - 1) / storeBlockBytes);
      for (let block = first; block <= last; block++) {
        const blockStart = block * storeBlockBytes;
        const from = Math.max(offset, blockStart);
        const to = Math.min(end, blockStart + storeBlockBytes);
        const buf = this.dirty.acquireBlock();
        if (to - from < storeBlockBytes) {
          const newest = this.dirty.get(volumeId, block);
          if (newest) newest.copy(buf);
          else await this.readBlock(f, blockStart, buf);
        }
        buf.set(data.subarray(from - offset, to - offset), from - blockStart);
        this.dirty.put(volumeId, block, buf);
      }
    } finally {
      this.unpin(f);
    }
    await this.dirty.afterWrite();
  }

  private async readBlock(f: BlockFile, at: number, into: Buffer): Promise<void> {
    const block = into.subarray(0, storeBlockBytes);
    const n = await f.pread(block, at);
    if (n < storeBlockBytes) block.fill(0, n);
  }

  private async zeroRange(volumeId: number, offset: number, length: number, mayHole: boolean): Promise<void> {
    if (length === 0) return;
    const f = await this.file(volumeId, !mayHole);
    if (!f) return; // nothing was ever written: already zeros (and a hole); or dropped
    try {
      const end = offset + length;
      const innerStart = alignUp(offset);
      const innerEnd = alignDown(end);
      if (innerStart >= innerEnd) {
        await this.writeZeros(volumeId, offset, length);
        return;
      }
      if (offset < innerStart) await this.writeZeros(volumeId, offset, innerStart - offset);
      const fromBlock = innerStart / storeBlockBytes;
      const toBlock = innerEnd / storeBlockBytes;
      if (this.dirty.hasDirtyIn(volumeId, fromBlock, toBlock)) {
        // Between flush batches: no older version of these blocks can land after the punch.
        // They stay dirty (visible to reads) until the punch is done, then are dropped.
        await this.dirty.exclusive(async () => {
          await this.zeroFileRange(f, innerStart, innerEnd - innerStart, mayHole);
          this.dirty.dropRange(volumeId, fromBlock, toBlock);
        });
      } else await this.zeroFileRange(f, innerStart, innerEnd - innerStart, mayHole);
      if (innerEnd < end) await this.writeZeros(volumeId, innerEnd, end - innerEnd);
    } finally {
      this.unpin(f);
    }
  }

  /**
   * Makes every byte of a volume at or past `offset` (aligned) a hole, however far the volume
   * reaches (a shrink's discard: ops.ts DiscardFrom). First, between flush batches, the dirty
   * blocks at or past it are dropped (found by walking the dirty map, never the range): once
   * the batch in flight is done nothing will write there, since later applies wait for this
   * one. Then, with the write-behind free to flush the blocks below, each data file is cut at
   * the offset and made durable (SpannedFile.discardFrom; the checkpoint that lets the WAL drop
   * this entry comes after this apply). Nothing below the offset is touched. Applied again (a
   * replay), it finds nothing left to do.
   */
  private async discardFrom(volumeId: number, offset: number): Promise<void> {
    const f = await this.file(volumeId, false);
    if (!f) return; // nothing was ever written (every dirty block has its file), or dropped
    try {
      await this.dirty.exclusive(async () => this.dirty.dropRange(volumeId, offset / storeBlockBytes, Number.POSITIVE_INFINITY));
      try {
        await f.discardFrom(offset);
      } catch (err) {
        // A failed fsync may have marked pages clean that never reached the disk (see syncFailure).
        if (err instanceof IoError) this.syncFailure ??= err;
        throw err;
      }
    } finally {
      this.unpin(f);
    }
  }

  /**
   * Makes an aligned range of a data file read as zeros: a punched hole (`mayHole`) or zeros
   * kept allocated (NO_HOLE), by fallocate; on a filesystem without that mode (EOPNOTSUPP:
   * tmpfs has no ZERO_RANGE, some have no PUNCH_HOLE), by writing zeros. Throwing there would
   * stop the node at this apply and again at every restart that replays it, on every replica
   * of the PG. Replicas may then differ in allocation only, never in content (BLOCK_STATUS
   * is a hint; digests read holes as zeros).
   */
  private async zeroFileRange(f: BlockFile, offset: number, length: number, mayHole: boolean): Promise<void> {
    if (mayHole ? !this.cannotPunch : !this.cannotZeroRange) {
      try {
        if (mayHole) await f.punchHole(offset, length);
        else await f.zeroRange(offset, length);
        return;
      } catch (err) {
        if (!isUnsupportedByFilesystem(err)) throw err;
        if (mayHole) this.cannotPunch = true;
        else this.cannotZeroRange = true;
      }
    }
    // From the node's one chunk of zeros (aligned, as O_DIRECT wants), a chunk at a time.
    await writeZerosOver(f, this.scratch.zeros(), offset, offset + length);
  }

  private async writeZeros(volumeId: number, offset: number, length: number): Promise<void> {
    assert(length < storeBlockBytes * 2, 'writeZeros is only for partial blocks');
    await this.writeRange(volumeId, offset, Buffer.alloc(length));
  }

  /**
   * Reads a volume range into `into` (at `intoOffset`). Never-written ranges read as zeros.
   *
   * Why a read returns every write applied before it started, or something newer: at one
   * instant T (synchronous, right before the disk read is issued) the range's dirty blocks
   * are copied into `into`; a buffer in the dirty map is never written again, so that is each
   * one's newest version at T. A block that is not dirty at T has its newest version at T on
   * disk, because a block leaves the dirty map only once the disk holds it (its flush
   * completed, or a punch of it completed). After T the disk only moves forward for it: a
   * store flushes one batch at a time, each with versions newer than the last, and a punch of
   * dirty blocks never overlaps a batch. So, per block, the disk read returns the version at T
   * or a newer one, and the dirty copies are the versions at T. Every write applied before
   * the read started was applied before T.
   */
  async read(volumeId: number, offset: number, length: number, into: Buffer, intoOffset = 0): Promise<void> {
    assert(into.length >= intoOffset + length, 'read buffer too small');
    if (length === 0) return;
    const restoresBefore = this.restoresBegunCount;
    this.assertStateReadable(restoresBefore, 'read');
    const f = await this.file(volumeId, false);
    if (!f) {
      // No file may mean a restore removed it while this looked: zeros would be no state.
      this.assertStateReadable(restoresBefore, 'read');
      into.fill(0, intoOffset, intoOffset + length);
      return;
    }
    let buf: Buffer | undefined;
    try {
      // Checked again after the open: from here nothing awaits until the pread is issued.
      this.assertStateReadable(restoresBefore, 'read');
      const first = Math.floor(offset / storeBlockBytes);
      const last = Math.floor((offset + length - 1) / storeBlockBytes);
      // T (see above): nothing awaits between this copy and the pread.
      const fromMemory = this.dirty.copyDirty(volumeId, offset, length, into, intoOffset);
      let lo = first;
      let hi = last;
      if (fromMemory) {
        while (lo <= hi && fromMemory[lo - first] === 1) lo++;
        while (hi >= lo && fromMemory[hi - first] === 1) hi--;
        if (lo > hi) return; // all of it was dirty
      }
      const start = lo * storeBlockBytes;
      const end = (hi + 1) * storeBlockBytes;
      buf = this.scratch.acquire(end - start);
      const span = buf.subarray(0, end - start);
      const n = await f.pread(span, start);
      if (n < span.length) span.fill(0, n);
      if (!fromMemory) {
        span.copy(into, intoOffset, offset - start, offset - start + length);
      } else {
        for (let block = lo; block <= hi; block++) {
          if (fromMemory[block - first] === 1) continue;
          const from = Math.max(offset, block * storeBlockBytes);
          const to = Math.min(offset + length, (block + 1) * storeBlockBytes);
          span.copy(into, intoOffset + from - offset, from - start, to - start);
        }
      }
    } finally {
      if (buf) this.scratch.release(buf);
      this.unpin(f);
    }
  }

  /** Allocation of a volume range, from the data file's holes. */
  blockStatus(volumeId: number, offset: number, length: number): Promise<BlockExtent[]> {
    return this.withAllocation(volumeId, (f) => this.allocation(f, offset, length), () => [{ length, hole: true, zero: true }]);
  }

  /**
   * The smallest offset in [offset, offset + length) at which this replica's data files of
   * volume `volumeId` hold anything but a hole (data, or zeros a NO_HOLE zero left allocated),
   * or offset + length if none: how far a hole reaches, for a gateway that asks every PG of a
   * volume's pool at once instead of each extent in turn (a PG's file holds only its own
   * extents, the others' are holes there). Seen as blockStatus sees it.
   */
  nextData(volumeId: number, offset: number, length: number): Promise<number> {
    return this.withAllocation(volumeId, (f) => this.firstAllocated(f, offset, offset + length), () => offset + length);
  }

  /**
   * `ask` of volume `volumeId`'s data file once every applied block is in it (`none` if the
   * replica holds no file of it), refused while a restore is under way or if one began meanwhile.
   */
  private async withAllocation<T>(volumeId: number, ask: (f: BlockFile) => Promise<T>, none: () => T): Promise<T> {
    const restoresBefore = this.restoresBegunCount;
    this.assertStateReadable(restoresBefore, 'block status');
    const f = await this.file(volumeId, false);
    if (!f) {
      this.assertStateReadable(restoresBefore, 'block status');
      return none();
    }
    try {
      // Allocation comes from the extent map: blocks applied before this call must be on disk.
      await this.dirty.flushAll();
      const answer = await ask(f);
      // A restore begun meanwhile dropped dirty blocks the files never got: no state's answer.
      this.assertStateReadable(restoresBefore, 'block status');
      return answer;
    } finally {
      this.unpin(f);
    }
  }

  /**
   * The start of the first run of `f`'s extent map in [from, to) that is not a hole, or `to`.
   * A map that tells nothing past some offset (no run, no progress) answers that offset: a
   * hole is only ever claimed where the map showed one.
   */
  private async firstAllocated(f: BlockFile, from: number, to: number): Promise<number> {
    let reached = from;
    for await (const run of extentRuns(f, from, to, nextDataRunsPerCall)) {
      if (run.kind !== ExtentKind.Hole) return run.start;
      reached = run.end;
    }
    return reached;
  }

  /**
   * The extents of a volume range from its data file's extent map (SEEK_DATA/SEEK_HOLE, and
   * FIEMAP within holes, walked on a pool thread: on ext4 the calls wait for a punch or zero of
   * the file). What SEEK_DATA calls a hole may be allocated: a NO_HOLE zero
   * (FALLOC_FL_ZERO_RANGE) leaves unwritten extents, which read as zeros but are no hole (later
   * writes there need no new space); they are reported as allocated zeros, as the client asked
   * for them. The answer may cover less than asked (a client asks again for the rest): a file a
   * client made of alternating 4 KiB runs would otherwise answer with one extent per run.
   */
  private async allocation(f: BlockFile, offset: number, length: number): Promise<BlockExtent[]> {
    const runs = await f.extentMap(offset, offset + length, blockStatusMaxExtents);
    const out: BlockExtent[] = [];
    for (let i = 0; i + 2 < runs.length; i += 3) {
      const kind = runs[i + 2] as ExtentKind;
      // Each kind has its own flags, and the map joins neighbours of a kind: one extent a run.
      out.push({ length: runs[i + 1] - runs[i], hole: kind === ExtentKind.Hole, zero: kind !== ExtentKind.Data });
    }
    return out;
  }

  /**
   * Whether this replica's data files may hold a byte of some volume at or past `offsetBytes`
   * (spanned-file.ts filesMayReach: a yes may be a byte since trimmed, a no is sure). Applied
   * blocks still in the write-behind are not seen: they were applied after the last
   * checkpoint, so their entries are still in the Raft log (compacted only up to a
   * checkpoint, whose sync wrote them out), which the caller reads too.
   */
  async filesMayReach(offsetBytes: number): Promise<boolean> {
    this.assertOpen('data file listing');
    return filesMayReach(this.dir, offsetBytes);
  }

  /**
   * Makes everything applied durable without the WAL: fdatasync every data file, then write
   * the checkpoint file (index, term, dedupe window) atomically. Returns the index now safe to
   * checkpoint in the WAL.
   */
  async checkpoint(): Promise<number> {
    const target = { ...this.meta };
    if (target.appliedIndex === this.durable.appliedIndex) return this.durable.appliedIndex;
    // Taken with the index, before the sync: applies that continue meanwhile are not in it.
    const recent = this.recent.toBytes();
    this.checkpointsRunning++;
    try {
      await this.syncDataFiles();
      await this.saveCheckpoint(target, recent);
    } finally {
      this.checkpointsRunning--;
    }
    return target.appliedIndex;
  }

  /** Records `meta` and `recent` as the durable state (the data files are synced already). */
  private async saveCheckpoint(meta: StoreMeta, recent: Uint8Array): Promise<void> {
    await writeCheckpoint(this.dir, { ...meta, recent }, this.legacyCheckpoint);
    this.legacyCheckpoint = false;
    this.durable = { ...meta };
  }

  /**
   * An image of every allocated run of every volume, for InstallSnapshot. Taken while applies
   * may continue, it can hold data newer than `appliedIndex`: the receiver replays the log
   * from the snapshot's index, and every command sets a range to a value, so replaying over
   * newer data converges to the same bytes. Refused unless this store has applied up to
   * `atLeast`, the snapshot's index (see assertImageCovers).
   */
  async snapshotImage(atLeast?: number): Promise<Buffer> {
    this.assertImageCovers(atLeast);
    // An image holds one state: refused if a restore begins before it is whole.
    const restoresBefore = this.restoresBegunCount;
    // Taken first: a request remembered here was applied before any data was read, so the
    // image holds its bytes (or newer ones), and the receiver may skip it when replaying.
    const recent = this.recent.toBytes();
    await this.dirty.flushAll(); // runs come from the files' extent maps
    const vols: { id: number; runs: [number, Buffer][]; zeros: [number, number][] }[] = [];
    for (const id of await volumesIn(this.dir)) {
      const f = await this.file(id, false);
      if (!f) continue; // dropped
      const runs: [number, number, Buffer][] = [];
      const zeros: [number, number, number][] = [];
      try {
        await this.imageRuns(f, id, 0, Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY, runs, zeros);
      } finally {
        this.unpin(f);
      }
      vols.push({ id, runs: runs.map(([, at, data]): [number, Buffer] => [at, data]), zeros: zeros.map(([, at, length]): [number, number] => [at, length]) });
    }
    this.assertStateReadable(restoresBefore, 'snapshot image');
    return packr.pack({ v: 1, vols, recent }) as Buffer;
  }

  /**
   * Refuses (Unavailable) to start an image for a replica installing a snapshot at `atLeast`
   * unless this store has applied up to it. The receiver takes the image as the state AT that
   * index and replays only the entries after it: an image taken before the store applied the
   * entries up to it (a node that is behind, or was the leader before the one that sent the
   * snapshot) lacks their writes, and their request keys, for good. Checked in the same
   * synchronous step as the dedupe table is taken (see snapshotImage for why the table comes
   * first): every entry up to `atLeast` is then in the table and its data in the dirty map or
   * the files, which the image reads after. `atLeast` undefined: no index to cover.
   */
  private assertImageCovers(atLeast: number | undefined): void {
    if (this.restoring) throw new Unavailable(`PG ${this.groupId}: restoring a snapshot, no image to serve`);
    if (atLeast !== undefined && this.meta.appliedIndex < atLeast) {
      throw new Unavailable(`PG ${this.groupId}: applied up to ${this.meta.appliedIndex}, an image for a snapshot at ${atLeast} would miss writes`);
    }
  }

  /** Replaces the whole state with a snapshot image at (index, term), durably. */
  async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    let parsed: { v: number; vols: { id: number; runs: [number, Uint8Array][]; zeros?: [number, number][] }[]; recent?: Uint8Array };
    try {
      parsed = packr.unpack(image) as typeof parsed;
    } catch (err) {
      throw new Corruption(`snapshot image undecodable: ${(err as Error).message}`);
    }
    if (parsed?.v !== 1 || !Array.isArray(parsed.vols)) throw new Corruption('snapshot image has an unknown format');
    // The whole image is one chunk of a streamed restore (and an absent table an empty one),
    // checked before anything here is replaced.
    const chunk: ImageChunk = {
      runs: parsed.vols.flatMap((vol) => vol.runs.map(([at, data]): [number, number, Uint8Array] => [vol.id, at, data])),
      zeros: parsed.vols.flatMap((vol) => (Array.isArray(vol.zeros) ? vol.zeros : []).map((z): [number, number, number] => [vol.id, z?.[0], z?.[1]])),
      next: null,
      recent: parsed.recent ?? new Uint8Array(0),
    };
    checkedImageZeros(chunk.zeros);
    await this.beginRestore();
    await this.restoreChunk(chunk);
    await this.finishRestore(index, term);
  }

  /**
   * Appends the image runs of volume `id` (its file `f`) from `from` on: data, read in pieces
   * of at most storeChunkBytes, and allocated zeros (unwritten extents); holes carry nothing.
   * Found in the file's extent map (off the event loop: on ext4 it waits for a punch of the
   * file), as far as the extent of the file's last span, so allocated zeros past the end of
   * its data are found too (a NO_HOLE zero keeps the file's size). Stops before the data
   * reaches `maxBytes` more bytes or the zeros `maxZeros` more ranges: returns where it stopped
   * (a chunk's cursor), or null once the volume is done.
   */
  private async imageRuns(f: SpannedFile, id: number, from: number, maxBytes: number, maxZeros: number, runs: [number, number, Buffer][], zeros: [number, number, number][]): Promise<number | null> {
    const end = f.extentEnd();
    let bytes = 0;
    let zeroCount = 0;
    let pos = from;
    for await (const { end: runEnd, kind } of extentRuns(f, from, end, imageMapRunsPerCall)) {
      if (kind === ExtentKind.Data) {
        while (pos < runEnd) {
          if (bytes >= maxBytes) return pos;
          const stop = Math.min(runEnd, pos + storeChunkBytes);
          const out = Buffer.allocUnsafe(stop - pos);
          await this.read(id, pos, out.length, out, 0);
          runs.push([id, pos, out]);
          bytes += out.length;
          pos = stop;
        }
        continue;
      }
      if (kind === ExtentKind.Unwritten) {
        if (zeroCount >= maxZeros) return pos;
        zeros.push([id, pos, runEnd - pos]);
        zeroCount++;
      }
      pos = runEnd;
    }
    return null;
  }

  /** Refuses an image (chunk) whose reads may have crossed a restore's start, or a close. */
  private assertImageReadable(restoresBefore: number): void {
    // Closed under it (a replica removed or rebuilt while a digest read it): its files may be
    // gone, and what was read is no whole state.
    this.assertOpen('image chunk');
    this.assertStateReadable(restoresBefore, 'image chunk');
  }

  /**
   * One chunk of a streamed snapshot image: allocated runs from `cursor` on (volumes by id,
   * offsets ascending), about `maxBytes` of data. The first chunk (cursor null) also carries the
   * dedupe table, taken before any data is read (see snapshotImage for why that order), and is
   * refused unless this store has applied up to `atLeast` (see assertImageCovers). Every chunk
   * carries the identity of the state it was read from (imageId), and a later one asked for
   * with the identity of its first (`image`) is refused, SNAPSHOT_SOURCE_CHANGED, once that
   * state is gone: the first chunk checked the snapshot's index against a state this store no
   * longer holds. (A request without `image`, from a puller of an earlier version, is served.)
   */
  async imageChunk(cursor: ImageCursor | null, maxBytes: number, atLeast?: number, image?: string): Promise<ImageChunk> {
    this.assertOpen('image chunk');
    if (cursor !== null && image !== undefined && image !== this.imageId) {
      throw new SnapshotSourceChanged(`PG ${this.groupId}: the image ${image} a pull began with is gone (now ${this.imageId}: the store was restored or reopened since)`);
    }
    // Only the first chunk has an index to cover; every chunk needs a whole state to read.
    this.assertImageCovers(cursor === null ? atLeast : undefined);
    // A chunk holds one state: refused if a restore begins before it is whole.
    const restoresBefore = this.restoresBegunCount;
    const readFrom = imageIdOf(this.openId, restoresBefore);
    const recent = cursor === null ? this.recent.toBytes() : undefined;
    await this.dirty.flushAll(); // runs come from SEEK_DATA
    const ids = await volumesIn(this.dir);
    const runs: [number, number, Buffer][] = [];
    const zeros: [number, number, number][] = [];
    let bytes = 0;
    let vi = cursor === null ? 0 : ids.findIndex((id) => id >= cursor.volumeId);
    let pos = cursor === null ? 0 : cursor.offset;
    if (vi >= 0 && cursor !== null && ids[vi] !== cursor.volumeId) pos = 0;
    for (; vi >= 0 && vi < ids.length; vi++, pos = 0) {
      const id = ids[vi];
      const f = await this.file(id, false);
      if (!f) continue; // dropped
      let stoppedAt: number | null;
      try {
        stoppedAt = await this.imageRuns(f, id, pos, maxBytes - bytes, maxImageZeroRangesPerChunk - zeros.length, runs, zeros);
      } finally {
        this.unpin(f);
      }
      bytes = 0;
      for (const r of runs) bytes += r[2].length;
      if (stoppedAt !== null) {
        this.assertImageReadable(restoresBefore);
        return { runs, zeros, next: { volumeId: id, offset: stoppedAt }, recent, image: readFrom };
      }
    }
    this.assertImageReadable(restoresBefore);
    return { runs, zeros, next: null, recent, image: readFrom };
  }

  /**
   * Replaces the whole state with an image pulled in chunks from another replica (`fetch`),
   * durably at (index, term); returns the bytes of data restored. The first chunk is asked
   * for before anything here is replaced, so a source that refuses it (not applied up to the
   * snapshot's index) leaves this store as it was. Every later chunk names the first's image
   * and must come from it: a source restored or reopened between two chunks refuses (one that
   * answers from another state anyway, say restarted as an earlier version that names none, is
   * caught here), and the pull is abandoned with
   * SNAPSHOT_SOURCE_CHANGED, this store left holding a partial image (holdsPartialImage) for
   * the caller to pull again from the first chunk. A source that names no image (an earlier
   * version) is taken as before, unchecked.
   */
  async pullImage(fetch: ImageChunkFetch, index: number, term: number): Promise<number> {
    let chunk = await fetch(null, undefined);
    const image = chunk.image;
    // Before anything here is replaced: a malformed first chunk leaves this replica as it was.
    checkedImageZeros(chunk.zeros);
    this.assertImageWithinLevel(chunk);
    await this.beginRestore();
    let bytes = 0;
    for (;;) {
      await this.restoreChunk(chunk);
      for (const r of chunk.runs) bytes += r[2].byteLength;
      if (chunk.next === null) break;
      chunk = await fetch(chunk.next, image);
      if (image !== undefined && chunk.image !== image) {
        throw new SnapshotSourceChanged(`PG ${this.groupId}: an image pulled for index ${index} changed at its source between chunks (${image}, then ${chunk.image ?? 'none named'})`);
      }
      this.assertImageWithinLevel(chunk);
    }
    await this.finishRestore(index, term);
    return bytes;
  }

  /** A store that stands for a build before far offsets stops at an image reaching past 256 TiB, as that build would. */
  private assertImageWithinLevel(chunk: ImageChunk): void {
    if (this.appliedOpsLevel >= StoreOpsLevel.FarOffsets) return;
    for (const [volumeId, offset, data] of chunk.runs) {
      if (offset + data.byteLength > farOffsetsFromBytes) {
        throw new Corruption(`PG ${this.groupId}: an image holds data of volume ${volumeId} at ${offset}, past 256 TiB, and this node applies store commands up to level ${this.appliedOpsLevel}`);
      }
    }
  }

  /**
   * Refuses a restore step on a closed store. A restore that went on after close() would put
   * blocks in a dirty map nobody flushes (or that close's dropAll throws away), and could then
   * record its index as complete in its checkpoint over files missing those blocks.
   */
  private assertOpen(what: string): void {
    if (this.closed) throw new Unavailable(`PG ${this.groupId}: store closed, ${what} refused`);
  }

  /**
   * Starts replacing the whole state with a streamed image: every data file is removed. From
   * its call every read of the state is refused (assertStateReadable) until finishRestore, so
   * reads that keep coming cannot hold it off; the operations already in flight on the files
   * end on them before they are closed.
   */
  async beginRestore(): Promise<void> {
    this.assertOpen('restore');
    // A checkpoint under way took the applied index from before: it would record it over the
    // image's. The owner orders them (the host's installSnapshot waits for the checkpoint).
    assert(this.checkpointsRunning === 0, `PG ${this.groupId}: a restore began while a checkpoint runs`);
    assert(this.filesRemoval === null, 'two restores at once');
    // Before anything is replaced, in the caller's synchronous step (see restoresBegun), as is
    // filesRemoval below: a read that starts after this call is refused, and one under way is
    // refused at its next step unless it has issued its I/O, which the removal waits for.
    this.restoresBegunCount++;
    this.restoring = true;
    this.restoredRecent = undefined;
    // Opens under way now may return a file removed below; file() hands out none until it is done.
    this.fileGeneration++;
    const removal = (async () => {
      await this.markRestoring();
      await this.dirty.exclusive(async () => this.dirty.dropAll());
      // A read, image chunk or block status in flight pinned its file and may have I/O handed to
      // the device (a ring submission not yet made, a read queued on the thread pool) that is
      // carried out on the file's descriptor number: closed under it, that number is invalid
      // or, once the process opens another file (a data file below, a WAL segment), names that
      // file, whose bytes the read would return as this volume's. Each ends first: a read
      // whose pread was issued with the bytes from before the restore, any other step refused.
      await this.pinsReleased();
      for (const f of this.files.values()) await f.close();
      this.files.clear();
      for (const name of await readdir(this.dir)) {
        if (volumeOfFileName(name) !== undefined) await unlink(join(this.dir, name));
      }
    })();
    this.filesRemoval = removal;
    try {
      await removal;
      // The files whose writeback failed are gone with the rest.
      this.syncFailure = null;
    } finally {
      this.filesRemoval = null;
    }
  }

  async restoreChunk(chunk: ImageChunk): Promise<void> {
    this.assertOpen('restore chunk');
    // Loaded once the image's index is known (finishRestore): the window counts its keys as
    // applied there. Nothing is applied meanwhile.
    const zeros = checkedImageZeros(chunk.zeros);
    if (chunk.recent) this.restoredRecent = Uint8Array.from(chunk.recent);
    for (const [vol, at, data] of chunk.runs) await this.writeRange(vol, at, data);
    // Kept allocated, as at the source (a NO_HOLE zero there); the ranges lie between its runs.
    for (const [vol, at, length] of zeros) await this.zeroRange(vol, at, length, false);
  }

  /** Writes out every dirty block, then makes every data file durable. */
  private async syncDataFiles(): Promise<void> {
    if (this.syncFailure) throw this.syncFailure;
    await this.dirty.flushAll();
    // Nor on files a close is closing (it waits for no sync that has not pinned yet).
    this.assertOpen('data file sync');
    for (const f of [...this.files.values()]) {
      this.pin(f);
      try {
        await f.fdatasync();
      } catch (err) {
        this.syncFailure ??= err as Error;
        throw err;
      } finally {
        this.unpin(f);
      }
    }
  }

  /** Ends a streamed restore: the image is durable and the state is at (index, term). */
  async finishRestore(index: number, term: number): Promise<void> {
    this.assertOpen('restore end');
    try {
      await this.syncDataFiles();
    } catch (err) {
      this.assertOpen('restore end'); // closed under the sync: that, not the closed fd, is why
      throw err;
    }
    // close() may have run while the files were synced: the image is then not known whole.
    this.assertOpen('restore end');
    if (this.restoredRecent) this.recent.load(this.restoredRecent, index);
    this.restoredRecent = undefined;
    this.meta = { appliedIndex: index, appliedTerm: term };
    await this.saveCheckpoint(this.meta, this.recent.toBytes());
    await this.clearRestoreMark();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fileGeneration++;
    // Applied data reaches the files (unsynced: the WAL still covers it) unless a flush failed.
    await this.dirty.flushAll().catch(() => undefined);
    await this.dirty.exclusive(async () => this.dirty.dropAll());
    this.dirty.close();
    // As a restore does (see beginRestore): a read, image chunk or block status in flight ends
    // on its file before that file's descriptor number is closed, and maybe given to another.
    await this.pinsReleased();
    for (const f of this.files.values()) await f.close();
    this.files.clear();
    for (const [f, volumeId] of this.retired) await this.closeRetired(f, volumeId).catch(() => undefined);
    this.retired.clear();
    await Promise.all(this.retiring);
  }
}
