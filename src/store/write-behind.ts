/**
 * Write-behind for applied PG data. Applying a committed write copies its blocks into a
 * per-store dirty map (volume → block → 4 KiB buffer) and returns; a flusher later writes the
 * dirty blocks in batches (sorted, merged into contiguous runs, every run of a batch queued in
 * one JS turn so io_uring submits them together). The WAL keeps every applied entry until
 * `PgStore.checkpoint()`, which flushes before it syncs, so nothing here needs to survive a
 * crash: the log replays it.
 *
 * Invariants (asserted where they are kept):
 *  - a buffer in the map is never written again; a newer write of the block puts a new buffer
 *    in its place (overwrites coalesce: only the newest version is ever flushed);
 *  - a block leaves the map only once the disk holds that version or a newer state (its flush
 *    completed, or a punch/zero of it completed), so a block that is not dirty reads its newest
 *    value from the disk;
 *  - at most one batch per store is in flight, and punch/zero of dirty blocks runs between
 *    batches (`exclusive`): two versions of a block never race on the device, and a late flush
 *    never undoes a punch;
 *  - dirty bytes are bounded per store and per node (`WriteBehindBudget`); an apply over either
 *    bound waits for a flush (backpressure).
 */
import { assert } from '../common/assert.js';
import type { BlockFile, BlockIo } from '../io/types.js';

export const dirtyBlockBytes = 4096;
/**
 * Delay before dirty blocks are flushed when no size limit forces it sooner. One node-wide
 * timer: every store's batch of the round is queued in the same JS turn, so one io_uring
 * submit carries the data writes of every PG on the node (a node holds tens of PGs; each
 * sees only a few writes per round). 20 ms measured best of 0, 5, 20 and 50 ms for 4 KiB
 * random writes (bench/README.md); at 5,000 writes/s that is ~400 KiB dirty per node.
 */
export const defaultFlushDelayMs = 20;
/** A store with this many dirty bytes starts a flush at once. */
export const defaultStoreFlushBytes = 1024 * 1024;
/** A store with more dirty bytes than this makes its applies wait for a flush. */
export const defaultStoreDirtyLimitBytes = 8 * 1024 * 1024;
/** Dirty bytes of every store on the node together; above it applies wait. */
export const defaultNodeDirtyLimitBytes = 64 * 1024 * 1024;
/** Blocks per write in a flush (one pwritev; well below IOV_MAX). */
const maxRunBlocks = 256;
/** Free 4 KiB buffers kept for reuse by the node (16 MiB). */
const maxFreeBlocks = 4096;

/** Per store. */
export interface WriteBehindOptions {
  flushBytes?: number;
  storeLimitBytes?: number;
}

/** Per node. */
export interface WriteBehindBudgetOptions {
  nodeDirtyLimitBytes?: number;
  flushDelayMs?: number;
  /**
   * Called with the error of every flush that failed. The store's blocks then live only in
   * memory, and the node-wide cap is off for every store (see fail): the owner must stop the
   * node now. The store itself only refuses its next apply or checkpoint, which an idle PG may
   * not make for a long time.
   */
  onFailure?: (err: Error) => void;
}

/** The node-wide side: dirty bytes of all stores, and the pool of 4 KiB block buffers. */
export class WriteBehindBudget {
  bytes = 0;
  failed = false;
  private readonly freeBlocks: Buffer[] = [];
  private readonly waiters: (() => void)[] = [];
  private readonly dirtyCaches = new Set<DirtyCache>();
  /** Stores waiting for the next flush round. */
  private readonly due = new Set<DirtyCache>();
  private timer: NodeJS.Timeout | NodeJS.Immediate | null = null;
  readonly limitBytes: number;
  readonly flushDelayMs: number;
  private readonly onFailure: ((err: Error) => void) | undefined;

  constructor(private readonly io: BlockIo, options: WriteBehindBudgetOptions = {}) {
    this.limitBytes = options.nodeDirtyLimitBytes ?? defaultNodeDirtyLimitBytes;
    this.flushDelayMs = options.flushDelayMs ?? defaultFlushDelayMs;
    this.onFailure = options.onFailure;
    assert(this.limitBytes >= dirtyBlockBytes, `node dirty limit ${this.limitBytes} below one block`);
  }

  /** Puts a store in the next flush round (one timer for the node). */
  schedule(cache: DirtyCache): void {
    this.due.add(cache);
    if (this.timer) return;
    if (this.flushDelayMs <= 0) this.timer = setImmediate(this.onTimer);
    else this.timer = setTimeout(this.onTimer, this.flushDelayMs).unref();
  }

  unschedule(cache: DirtyCache): void {
    this.due.delete(cache);
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    // Every batch starts in the microtasks of this turn: their writes share one submit.
    for (const c of this.due) c.requestFlush();
    this.due.clear();
  };

  /** An aligned 4 KiB buffer; its old content is garbage. */
  acquireBlock(): Buffer {
    return this.freeBlocks.pop() ?? this.io.allocAligned(dirtyBlockBytes);
  }

  releaseBlock(buf: Buffer): void {
    assert(buf.length === dirtyBlockBytes, 'not a block buffer');
    if (this.freeBlocks.length < maxFreeBlocks) this.freeBlocks.push(buf);
  }

  get over(): boolean {
    return this.bytes > this.limitBytes;
  }

  added(cache: DirtyCache, bytes: number): void {
    this.bytes += bytes;
    this.dirtyCaches.add(cache);
  }

  removed(cache: DirtyCache, bytes: number): void {
    this.bytes -= bytes;
    assert(this.bytes >= 0, 'node dirty bytes below zero');
    if (cache.bytes === 0) this.dirtyCaches.delete(cache);
    if (this.waiters.length > 0 && !this.over) for (const w of this.waiters.splice(0)) w();
  }

  /**
   * A flush failed: nobody waits for bytes that may never drain, and the cap stays off (the
   * owner, told through onFailure, is stopping the node).
   */
  fail(err: Error): void {
    this.failed = true;
    for (const w of this.waiters.splice(0)) w();
    this.onFailure?.(err);
  }

  /** Starts a flush in every store with dirty data and waits until the node is under its limit. */
  async relieve(): Promise<void> {
    while (this.over && !this.failed) {
      for (const c of this.dirtyCaches) c.requestFlush();
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

/** Dirty blocks of one store, and its flusher. */
export class DirtyCache {
  /** Dirty bytes (4 KiB per map entry, in flight or not). */
  bytes = 0;
  /** The first flush error: the store refuses further applies (the node stops and replays; see WriteBehindBudgetOptions.onFailure). */
  failure: Error | null = null;
  private readonly vols = new Map<number, Map<number, Buffer>>();
  /** Buffers of the batch in flight (not released when superseded until it completes). */
  private readonly inFlight = new Set<Buffer>();
  /** Batches and exclusive sections run one after another on this chain. */
  private lane: Promise<unknown> = Promise.resolve();
  /** A batch queued on the lane that has not started: a later request may share it. */
  private queued: Promise<void> | null = null;
  private closed = false;
  private readonly flushBytes: number;
  private readonly limitBytes: number;

  constructor(
    private readonly budget: WriteBehindBudget,
    private readonly fileOf: (volumeId: number) => BlockFile | undefined,
    options: WriteBehindOptions = {},
  ) {
    this.flushBytes = options.flushBytes ?? defaultStoreFlushBytes;
    this.limitBytes = Math.max(options.storeLimitBytes ?? defaultStoreDirtyLimitBytes, this.flushBytes);
  }

  acquireBlock(): Buffer {
    return this.budget.acquireBlock();
  }

  /** The newest dirty version of a block (read-only), or undefined when the disk has it. */
  get(volumeId: number, block: number): Buffer | undefined {
    return this.vols.get(volumeId)?.get(block);
  }

  /** Makes `buf` (filled, from acquireBlock) the newest version of a block; the map owns it. */
  put(volumeId: number, block: number, buf: Buffer): void {
    let m = this.vols.get(volumeId);
    if (!m) this.vols.set(volumeId, (m = new Map()));
    const old = m.get(block);
    assert(old !== buf, 'a buffer in the dirty map was written again');
    m.set(block, buf);
    if (old) {
      // The batch in flight still reads the old version; it releases it when it completes.
      if (!this.inFlight.has(old)) this.budget.releaseBlock(old);
    } else {
      this.bytes += dirtyBlockBytes;
      this.budget.added(this, dirtyBlockBytes);
    }
  }

  /** After an apply's puts: start or schedule a flush; wait when over a limit. */
  afterWrite(): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    if (this.bytes >= this.flushBytes) this.requestFlush();
    else this.scheduleFlush();
    if (this.bytes > this.limitBytes) return this.relieveStore();
    if (this.budget.over) return this.budget.relieve();
    return undefined;
  }

  private async relieveStore(): Promise<void> {
    while (this.bytes > this.limitBytes) await this.queueBatch();
    if (this.budget.over) await this.budget.relieve();
  }

  /** True when a block in [fromBlock, toBlock) of the volume is dirty. */
  hasDirtyIn(volumeId: number, fromBlock: number, toBlock: number): boolean {
    const m = this.vols.get(volumeId);
    if (!m || m.size === 0) return false;
    if (m.size < toBlock - fromBlock) {
      for (const k of m.keys()) if (k >= fromBlock && k < toBlock) return true;
      return false;
    }
    for (let k = fromBlock; k < toBlock; k++) if (m.has(k)) return true;
    return false;
  }

  /**
   * Copies the dirty part of [offset, offset + length) of a volume into `into` (at
   * `intoOffset`) and returns one flag per block of the range (1: copied from memory), or null
   * when no block of the range is dirty. Synchronous: the copy is the state at this instant.
   */
  copyDirty(volumeId: number, offset: number, length: number, into: Buffer, intoOffset: number): Uint8Array | null {
    const m = this.vols.get(volumeId);
    if (!m || m.size === 0) return null;
    const first = Math.floor(offset / dirtyBlockBytes);
    const last = Math.floor((offset + length - 1) / dirtyBlockBytes);
    let flags: Uint8Array | null = null;
    const visit = (block: number, buf: Buffer): void => {
      flags ??= new Uint8Array(last - first + 1);
      flags[block - first] = 1;
      const blockStart = block * dirtyBlockBytes;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + dirtyBlockBytes);
      buf.copy(into, intoOffset + from - offset, from - blockStart, to - blockStart);
    };
    if (m.size < last - first + 1) {
      for (const [k, buf] of m) if (k >= first && k <= last) visit(k, buf);
    } else {
      for (let k = first; k <= last; k++) {
        const buf = m.get(k);
        if (buf) visit(k, buf);
      }
    }
    return flags;
  }

  /**
   * Runs `body` between batches: no flush is in flight while it runs and none starts before it
   * ends. Punch and zero of dirty blocks run here, then drop the blocks (dropRange).
   */
  exclusive<T>(body: () => Promise<T>): Promise<T> {
    const p = this.lane.then(body);
    this.lane = p.then(noop, noop);
    return p;
  }

  /** Forgets dirty blocks in [fromBlock, toBlock) (the disk now has a newer state). Exclusive only. */
  dropRange(volumeId: number, fromBlock: number, toBlock: number): void {
    const m = this.vols.get(volumeId);
    if (!m || m.size === 0) return;
    let freed = 0;
    if (m.size < toBlock - fromBlock) {
      for (const [k, buf] of m) {
        if (k < fromBlock || k >= toBlock) continue;
        assert(!this.inFlight.has(buf), 'dropRange of a block in flight');
        m.delete(k);
        this.budget.releaseBlock(buf);
        freed += dirtyBlockBytes;
      }
    } else {
      for (let k = fromBlock; k < toBlock; k++) {
        const buf = m.get(k);
        if (!buf) continue;
        assert(!this.inFlight.has(buf), 'dropRange of a block in flight');
        m.delete(k);
        this.budget.releaseBlock(buf);
        freed += dirtyBlockBytes;
      }
    }
    this.forget(freed);
  }

  /** Forgets every dirty block (the data files are being replaced). Exclusive only. */
  dropAll(): void {
    assert(this.inFlight.size === 0, 'dropAll while a flush is in flight');
    let freed = 0;
    for (const m of this.vols.values()) {
      for (const buf of m.values()) this.budget.releaseBlock(buf);
      freed += m.size * dirtyBlockBytes;
    }
    this.vols.clear();
    this.forget(freed);
  }

  private forget(freed: number): void {
    if (freed === 0) return;
    this.bytes -= freed;
    assert(this.bytes >= 0, 'store dirty bytes below zero');
    this.budget.removed(this, freed);
  }

  /** Resolves once every block dirty now is on disk (not yet synced: callers fdatasync). */
  flushAll(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.bytes === 0) return Promise.resolve(); // nothing dirty, nothing in flight
    return this.queueBatch();
  }

  /** Starts a flush soon without waiting for it (errors are kept in `failure`). */
  requestFlush(): void {
    if (this.queued || this.bytes === 0 || this.closed) return;
    this.queueBatch().catch(noop);
  }

  private scheduleFlush(): void {
    if (this.queued || this.closed) return;
    this.budget.schedule(this);
  }

  /** A batch after whatever runs on the lane; one not yet started is shared. */
  private queueBatch(): Promise<void> {
    if (this.queued) return this.queued;
    const p = this.exclusive(() => {
      this.queued = null;
      return this.runBatch();
    });
    this.queued = p;
    return p;
  }

  /** Writes every block dirty now: sorted, merged into runs, all queued in this turn. */
  private async runBatch(): Promise<void> {
    this.budget.unschedule(this);
    if (this.failure) throw this.failure;
    if (this.bytes === 0) return;
    const vols: number[] = [];
    const blocks: number[] = [];
    const bufs: Buffer[] = [];
    const writes: Promise<void>[] = [];
    for (const [vol, m] of this.vols) {
      if (m.size === 0) continue;
      const f = this.fileOf(vol);
      if (!f) {
        // Only a dropped volume loses its file while blocks are dirty: they go with it.
        this.dropRange(vol, 0, Number.POSITIVE_INFINITY);
        continue;
      }
      const keys = Array.from(m.keys()).sort((a, b) => a - b);
      let runStart = 0;
      for (let i = 1; i <= keys.length; i++) {
        if (i < keys.length && keys[i] === keys[i - 1] + 1 && i - runStart < maxRunBlocks) continue;
        const run: Buffer[] = new Array<Buffer>(i - runStart);
        for (let j = runStart; j < i; j++) {
          const buf = m.get(keys[j]) as Buffer;
          run[j - runStart] = buf;
          this.inFlight.add(buf);
          vols.push(vol);
          blocks.push(keys[j]);
          bufs.push(buf);
        }
        const at = keys[runStart] * dirtyBlockBytes;
        writes.push(run.length === 1 ? f.pwrite(run[0], at) : f.pwritev(run, at));
        runStart = i;
      }
    }
    let error: Error | null = null;
    for (const w of writes) {
      try {
        await w;
      } catch (err) {
        error ??= err as Error;
      }
    }
    this.inFlight.clear();
    if (error) {
      // The blocks stay dirty (reads still see them); the node stops and replays from the WAL.
      this.failure = error;
      this.budget.fail(error);
      throw error;
    }
    let freed = 0;
    for (let i = 0; i < bufs.length; i++) {
      const m = this.vols.get(vols[i]) as Map<number, Buffer>;
      if (m.get(blocks[i]) === bufs[i]) {
        m.delete(blocks[i]);
        freed += dirtyBlockBytes;
      }
      // Flushed and unmapped, or superseded while in flight: nobody holds it any more.
      this.budget.releaseBlock(bufs[i]);
    }
    this.forget(freed);
    if (this.bytes > 0 && !this.closed) this.scheduleFlush(); // written meanwhile
  }

  /** No more flushes start (call after flushAll, or when the data is being thrown away). */
  close(): void {
    this.closed = true;
    this.budget.unschedule(this);
  }
}

function noop(): void {}
