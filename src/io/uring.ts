/**
 * BlockIo over the io_uring addon: files opened O_DIRECT, writes with RWF_DSYNC, fdatasync and
 * fallocate as ring operations, every request of one JS turn handed to the kernel with one
 * io_uring_submit, completions delivered on the JS thread in batches.
 */
import * as fs from 'node:fs';
import { assert } from '../common/assert.js';
import { IoError, Unavailable } from '../common/errors.js';
import { checkAligned, closedFileError, toIoError } from './check.js';
import { fdClose, fdSize, fdTruncate } from './fd.js';
import { ExtentQueries, type NativeAddon, type NativeRing, seekThroughAddon } from './native.js';
import { type BlockFile, type BlockIo, type OpenFileOptions, ioAlignmentBytes } from './types.js';

/** Submission-queue depth; also bounds operations in flight (more wait in a JS queue). */
export const defaultRingEntries = 256;

/**
 * How a durable (`dsync`) write is made durable:
 *  - `rwf-dsync`: one O_DIRECT write with RWF_DSYNC (the kernel flushes when the write completes);
 *  - `fdatasync`: an O_DIRECT write, then an fdatasync ring operation once it completed.
 * Both end in one device flush. RWF_DSYNC is one ring round trip and the better tail on a
 * quiet machine; on ext4 its completion (and the flush) runs from a kernel workqueue, which
 * under heavy CPU contention was measured slower than the second round trip. bench/README.md
 * has both measured.
 */
export type DurableWriteMode = 'rwf-dsync' | 'fdatasync';
export const defaultDurableWriteMode: DurableWriteMode = 'rwf-dsync';

export const enum Op {
  Read,
  Write,
  Writev,
  Fsync,
  Fallocate,
}

/** A pending operation. Slots are reused; only the promise callbacks are per I/O. */
interface Slot {
  op: Op;
  fd: number;
  buf: Buffer | null;
  bufs: readonly Buffer[] | null;
  offset: number;
  arg: number; // rwFlags, datasync (0/1) or fallocate mode
  length: number; // expected bytes for writes, fallocate length
  path: string;
  resolve: ((n: number) => void) | null;
  reject: ((e: Error) => void) | null;
  /** A whole public operation (submitOne): counted in busyOps until it completes. */
  counted: boolean;
}

const syscallOf: Record<Op, string> = {
  [Op.Read]: 'pread',
  [Op.Write]: 'pwrite',
  [Op.Writev]: 'pwritev',
  [Op.Fsync]: 'fdatasync',
  [Op.Fallocate]: 'fallocate',
};

export class UringBlockIo implements BlockIo {
  readonly kind = 'uring' as const;
  readonly alignmentBytes = ioAlignmentBytes;
  private readonly ring: NativeRing;
  private readonly slots: Slot[] = [];
  private readonly freeSlots: number[] = [];
  /** Operations waiting for a free slot, in arrival order. */
  private readonly waitingForSlot: Slot[] = [];
  private submitScheduled = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly addon: NativeAddon,
    ringEntries = defaultRingEntries,
    readonly durableWrites: DurableWriteMode = defaultDurableWriteMode,
  ) {
    const slotCount = ringEntries * 2; // the CQ is twice the SQ
    const completions = new Int32Array(slotCount * 2);
    this.ring = new addon.Ring(ringEntries, completions, (count) => this.onComplete(completions, count));
    for (let i = 0; i < slotCount; i++) {
      this.slots.push({ op: Op.Read, fd: -1, buf: null, bufs: null, offset: 0, arg: 0, length: 0, path: '', resolve: null, reject: null, counted: false });
      this.freeSlots.push(slotCount - 1 - i);
    }
  }

  /** Operations submitted and not yet completed (for tests and metrics). */
  get inFlight(): number {
    return this.ring.inFlight;
  }

  open(path: string, options: OpenFileOptions = {}): Promise<BlockFile> {
    if (this.closed) return Promise.reject(new Unavailable('BlockIo is closed'));
    const flags =
      (options.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) |
      (options.create ? fs.constants.O_CREAT : 0) |
      this.addon.constants.O_DIRECT;
    return new Promise((resolve, reject) => {
      fs.open(path, flags, 0o644, (err, fd) => (err ? reject(toIoError(err, 'open', path)) : resolve(new UringFile(this, this.addon, path, fd))));
    });
  }

  allocAligned(lengthBytes: number): Buffer {
    checkAligned('allocAligned', 0, lengthBytes);
    return this.addon.allocAligned(lengthBytes, ioAlignmentBytes);
  }

  /** Every close() after the first answers when the first's does: once the ring is closed. */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= new Promise<void>((resolve) => {
      if (this.busyOps === 0) resolve();
      else this.drainWaiters.push(resolve);
    }).then(() => this.ring.close());
    return this.closing;
  }

  /** Public operations started and not settled (one may take two ring operations). */
  private busyOps = 0;

  /** Runs one public operation: refused once closed; close() waits for the ones started. */
  async run<T>(body: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Unavailable('BlockIo is closed');
    this.busyOps++;
    try {
      return await body();
    } finally {
      this.settled();
    }
  }

  private settled(): void {
    if (--this.busyOps === 0 && this.drainWaiters.length > 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  /**
   * A public operation that is one ring operation (every read and write of the data path):
   * settled straight from its completion. run() with async closures cost three promises,
   * their closures and three microtask hops per write, on every write of every replica.
   */
  submitOne(op: Op, fd: number, path: string, buf: Buffer | null, bufs: readonly Buffer[] | null, offset: number, arg: number, length: number): Promise<number> {
    if (this.closed) return Promise.reject(new Unavailable('BlockIo is closed'));
    this.busyOps++;
    return this.enqueue(op, fd, path, buf, bufs, offset, arg, length, true);
  }

  /** Queues one ring operation; the submit happens once per JS turn (batched submission). */
  enqueue(op: Op, fd: number, path: string, buf: Buffer | null, bufs: readonly Buffer[] | null, offset: number, arg: number, length: number, counted = false): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const token = this.freeSlots.pop();
      const slot: Slot =
        token === undefined
          ? { op, fd, buf, bufs, offset, arg, length, path, resolve, reject, counted }
          : this.slots[token];
      slot.counted = counted;
      slot.op = op;
      slot.fd = fd;
      slot.buf = buf;
      slot.bufs = bufs;
      slot.offset = offset;
      slot.arg = arg;
      slot.length = length;
      slot.path = path;
      slot.resolve = resolve;
      slot.reject = reject;
      if (token === undefined) {
        this.waitingForSlot.push(slot);
        return;
      }
      this.prep(token, slot);
    });
  }

  private prep(token: number, s: Slot): void {
    let ok = this.prepOne(token, s);
    if (!ok) {
      // Submission queue full: hand what is queued to the kernel, then there is room.
      this.ring.submit();
      ok = this.prepOne(token, s);
      assert(ok, 'io_uring submission queue full right after submit');
    }
    if (!this.submitScheduled) {
      this.submitScheduled = true;
      queueMicrotask(this.flushSubmissions);
    }
  }

  private prepOne(token: number, s: Slot): boolean {
    switch (s.op) {
      case Op.Read:
        return this.ring.prepRead(token, s.fd, s.buf as Buffer, s.offset);
      case Op.Write:
        return this.ring.prepWrite(token, s.fd, s.buf as Buffer, s.offset, s.arg);
      case Op.Writev:
        return this.ring.prepWritev(token, s.fd, s.bufs as Buffer[], s.offset, s.arg);
      case Op.Fsync:
        return this.ring.prepFsync(token, s.fd, s.arg !== 0);
      case Op.Fallocate:
        return this.ring.prepFallocate(token, s.fd, s.arg, s.offset, s.length);
    }
  }

  private readonly flushSubmissions = (): void => {
    this.submitScheduled = false;
    this.ring.submit();
  };

  private onComplete(completions: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) {
      const token = completions[2 * i];
      const res = completions[2 * i + 1];
      const s = this.slots[token];
      const resolve = s.resolve as (n: number) => void;
      const reject = s.reject as (e: Error) => void;
      const op = s.op;
      // One ring op serves both syncs; its arg (datasync 1 or 0) tells which the caller asked for.
      const syscall = op === Op.Fsync && s.arg === 0 ? 'fsync' : syscallOf[op];
      const expected = s.length;
      const path = s.path;
      const counted = s.counted;
      s.resolve = s.reject = null;
      s.counted = false;
      s.buf = null;
      s.bufs = null;
      const waiting = this.waitingForSlot.shift();
      if (waiting) {
        this.slots[token] = waiting;
        this.prep(token, waiting);
      } else this.freeSlots.push(token);
      if (res < 0) reject(new IoError(syscall, -res, `${syscall} ${path} failed: errno ${-res}`));
      else if ((op === Op.Write || op === Op.Writev) && res !== expected)
        reject(new IoError(syscall, 28 /* ENOSPC */, `short write ${res}/${expected} on ${path}`));
      else resolve(res);
      if (counted) this.settled();
    }
  }
}

class UringFile implements BlockFile {
  readonly direct = true;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly extents: ExtentQueries;
  constructor(private readonly io: UringBlockIo, private readonly addon: NativeAddon, readonly path: string, private readonly fd: number) {
    this.extents = new ExtentQueries(addon, fd, path);
  }

  pread(buf: Buffer, offsetBytes: number): Promise<number> {
    if (this.closed) return Promise.reject(closedFileError('pread', this.path));
    try {
      checkAligned('pread', offsetBytes, buf.length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.io.submitOne(Op.Read, this.fd, this.path, buf, null, offsetBytes, 0, buf.length);
  }

  // The void promises of pwrite and pwritev resolve with the byte count when they come
  // straight from submitOne (no wrapper to drop it): callers of a void promise ignore it.

  pwrite(buf: Buffer, offsetBytes: number, dsync = false): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('pwrite', this.path));
    try {
      checkAligned('pwrite', offsetBytes, buf.length);
    } catch (err) {
      return Promise.reject(err);
    }
    const viaFlag = dsync && this.io.durableWrites === 'rwf-dsync';
    if (!dsync || viaFlag) {
      return this.io.submitOne(Op.Write, this.fd, this.path, buf, null, offsetBytes, viaFlag ? this.addon.constants.RWF_DSYNC : 0, buf.length) as Promise<unknown> as Promise<void>;
    }
    return this.io.run(async () => {
      // A device without RWF_DSYNC support: the write, then its own fdatasync.
      await this.io.enqueue(Op.Write, this.fd, this.path, buf, null, offsetBytes, 0, buf.length);
      await this.io.enqueue(Op.Fsync, this.fd, this.path, null, null, 0, 1, 0);
    });
  }

  pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync = false): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('pwritev', this.path));
    let total = 0;
    try {
      for (const b of bufs) {
        checkAligned('pwritev', 0, b.length);
        total += b.length;
      }
      checkAligned('pwritev', offsetBytes, total);
    } catch (err) {
      return Promise.reject(err);
    }
    const viaFlag = dsync && this.io.durableWrites === 'rwf-dsync';
    if (!dsync || viaFlag) {
      return this.io.submitOne(Op.Writev, this.fd, this.path, null, bufs, offsetBytes, viaFlag ? this.addon.constants.RWF_DSYNC : 0, total) as Promise<unknown> as Promise<void>;
    }
    return this.io.run(async () => {
      // A device without RWF_DSYNC support: the write, then its own fdatasync.
      await this.io.enqueue(Op.Writev, this.fd, this.path, null, bufs, offsetBytes, 0, total);
      await this.io.enqueue(Op.Fsync, this.fd, this.path, null, null, 0, 1, 0);
    });
  }

  fdatasync(): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('fdatasync', this.path));
    return this.io.submitOne(Op.Fsync, this.fd, this.path, null, null, 0, 1, 0) as Promise<unknown> as Promise<void>;
  }

  fsync(): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('fsync', this.path));
    return this.io.submitOne(Op.Fsync, this.fd, this.path, null, null, 0, 0, 0) as Promise<unknown> as Promise<void>;
  }

  async punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.closed) throw closedFileError('fallocate', this.path);
    checkAligned('punchHole', offsetBytes, lengthBytes);
    const c = this.addon.constants;
    await this.io.run(() => this.io.enqueue(Op.Fallocate, this.fd, this.path, null, null, offsetBytes, c.FALLOC_FL_PUNCH_HOLE | c.FALLOC_FL_KEEP_SIZE, lengthBytes));
  }

  async zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.closed) throw closedFileError('fallocate', this.path);
    checkAligned('zeroRange', offsetBytes, lengthBytes);
    const c = this.addon.constants;
    await this.io.run(() => this.io.enqueue(Op.Fallocate, this.fd, this.path, null, null, offsetBytes, c.FALLOC_FL_ZERO_RANGE | c.FALLOC_FL_KEEP_SIZE, lengthBytes));
  }

  async seekData(offsetBytes: number): Promise<number> {
    if (this.closed) throw closedFileError('lseek', this.path);
    return seekThroughAddon(this.addon, this.fd, this.path, offsetBytes, 'data');
  }

  async seekHole(offsetBytes: number): Promise<number> {
    if (this.closed) throw closedFileError('lseek', this.path);
    return seekThroughAddon(this.addon, this.fd, this.path, offsetBytes, 'hole');
  }

  extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array> {
    if (this.closed) return Promise.reject(closedFileError('lseek', this.path));
    return this.extents.map(startBytes, endBytes, maxRuns);
  }

  size(): Promise<number> {
    if (this.closed) return Promise.reject(closedFileError('fstat', this.path));
    return fdSize(this.fd, this.path);
  }

  truncate(sizeBytes: number): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('ftruncate', this.path));
    return fdTruncate(this.fd, sizeBytes, this.path);
  }

  /** Every close() after the first answers when the first's does: once the descriptor is closed. */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    await this.extents.drained();
    await fdClose(this.fd, this.path);
  }
}
