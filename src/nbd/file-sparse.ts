/**
 * Sparse-file primitives for the file export, through the native addon: lseek(SEEK_HOLE) is a
 * synchronous call (an extent lookup, about a microsecond); an extent map (SEEK_DATA/SEEK_HOLE
 * and FIEMAP over a range) is asked on a pool thread, since on ext4 it waits for a punch or zero
 * of the file; and fallocate (punch hole, zero range) runs as an io_uring operation, which the
 * kernel executes off the event loop: a deallocation of gigabytes never stalls the other
 * connections, and no child process is involved.
 *
 * `openSparseFile` returns the reason instead of throwing when the addon is missing or the ring
 * cannot be created, so the file backend can keep its portable behaviour and say why.
 */
import { assert } from '../common/assert.js';
import { IoError } from '../common/errors.js';
import { closedFileError, toIoError } from '../io/check.js';
import { ExtentQueries, loadNative, type NativeAddon, type NativeRing } from '../io/native.js';

/** fallocate operations that may be in the ring at once; more wait in a JS queue. */
const ringEntries = 8;
const slotCount = ringEntries * 2; // the CQ is twice the SQ

export interface SparseFile {
  /** The first offset >= `offsetBytes` in a hole (EOF counts as one), or -1 at or past EOF. */
  seekHole(offsetBytes: number): number;
  /**
   * The allocation of [start, end) as BlockFile.extentMap tells it (data, holes, unwritten),
   * asked on a pool thread.
   */
  extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array>;
  /** The same, asked on the event loop (for a caller that blocks on the file there anyway). */
  extentMapSync(startBytes: number, endBytes: number, maxRuns: number): Float64Array;
  /** FALLOC_FL_PUNCH_HOLE|KEEP_SIZE: deallocates; partial blocks at the edges are zeroed. */
  punchHole(offsetBytes: number, lengthBytes: number): Promise<void>;
  /** FALLOC_FL_ZERO_RANGE|KEEP_SIZE: reads as zeros, stays allocated (unwritten extents). */
  zeroRange(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * Tears the ring down once idle; resolves once no extent query uses the fd, which belongs to
   * the caller and may be closed then.
   */
  close(): Promise<void>;
}

interface Pending {
  mode: number;
  offset: number;
  length: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

class RingSparseFile implements SparseFile {
  private readonly ring: NativeRing;
  private readonly slots: (Pending | null)[] = new Array<Pending | null>(slotCount).fill(null);
  private readonly freeSlots: number[] = [];
  private readonly waiting: Pending[] = [];
  private closed = false;
  private readonly extents: ExtentQueries;

  constructor(
    private readonly addon: NativeAddon,
    private readonly fd: number,
    private readonly path: string,
  ) {
    this.extents = new ExtentQueries(addon, fd, path);
    const completions = new Int32Array(slotCount * 2);
    this.ring = new addon.Ring(ringEntries, completions, (count) => this.onComplete(completions, count));
    for (let i = slotCount - 1; i >= 0; i--) this.freeSlots.push(i);
  }

  seekHole(offsetBytes: number): number {
    return this.lseek(offsetBytes, this.addon.constants.SEEK_HOLE);
  }

  extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array> {
    if (this.closed) return Promise.reject(closedFileError('lseek', this.path));
    return this.extents.map(startBytes, endBytes, maxRuns);
  }

  extentMapSync(startBytes: number, endBytes: number, maxRuns: number): Float64Array {
    if (this.closed) throw closedFileError('lseek', this.path);
    try {
      return this.addon.extentMapSync(this.fd, startBytes, endBytes, maxRuns);
    } catch (err) {
      throw toIoError(err, 'lseek', this.path);
    }
  }

  private lseek(offsetBytes: number, whence: number): number {
    try {
      return this.addon.lseek(this.fd, offsetBytes, whence);
    } catch (err) {
      const e = err as { errno?: number; message?: string };
      throw new IoError('lseek', typeof e.errno === 'number' ? Math.abs(e.errno) : 5, `lseek ${this.path} failed: ${e.message ?? 'unknown'}`);
    }
  }

  punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    const c = this.addon.constants;
    return this.fallocate(c.FALLOC_FL_PUNCH_HOLE | c.FALLOC_FL_KEEP_SIZE, offsetBytes, lengthBytes);
  }

  zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    const c = this.addon.constants;
    return this.fallocate(c.FALLOC_FL_ZERO_RANGE | c.FALLOC_FL_KEEP_SIZE, offsetBytes, lengthBytes);
  }

  private fallocate(mode: number, offset: number, length: number): Promise<void> {
    assert(!this.closed, 'fallocate after close');
    assert(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length > 0, `fallocate: bad range ${offset}+${length}`);
    return new Promise<void>((resolve, reject) => {
      const p: Pending = { mode, offset, length, resolve, reject };
      const token = this.freeSlots.pop();
      if (token === undefined) this.waiting.push(p);
      else this.start(token, p);
    });
  }

  private start(token: number, p: Pending): void {
    this.slots[token] = p;
    // Deallocation is rare next to reads and writes: submit at once rather than batch per turn.
    if (!this.ring.prepFallocate(token, this.fd, p.mode, p.offset, p.length)) {
      this.ring.submit();
      const ok = this.ring.prepFallocate(token, this.fd, p.mode, p.offset, p.length);
      assert(ok, 'io_uring submission queue full right after submit');
    }
    this.ring.submit();
  }

  private onComplete(completions: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) {
      const token = completions[2 * i];
      const res = completions[2 * i + 1];
      const p = this.slots[token];
      assert(p !== null, `completion for idle fallocate slot ${token}`);
      this.slots[token] = null;
      const next = this.waiting.shift();
      if (next) this.start(token, next);
      else this.freeSlots.push(token);
      if (res < 0) p.reject(new IoError('fallocate', -res, `fallocate ${this.path} [${p.offset}, +${p.length}) failed: errno ${-res}`));
      else p.resolve();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ring.close();
    await this.extents.drained();
  }
}

/**
 * SEEK_DATA/SEEK_HOLE and fallocate on `fd` through the addon, or why they are unavailable.
 * `native` replaces the loaded addon (tests force the portable path with `{ error }`).
 */
export function openSparseFile(fd: number, path: string, native: ReturnType<typeof loadNative> = loadNative()): SparseFile | { error: string } {
  if (!('addon' in native)) return { error: native.error };
  const addon = native.addon;
  if (typeof addon.lseek !== 'function' || addon.constants.SEEK_DATA === undefined || addon.constants.FALLOC_FL_PUNCH_HOLE === undefined) {
    return { error: 'addon without lseek/fallocate' };
  }
  try {
    // A probe: filesystems without SEEK_DATA support answer EINVAL here.
    addon.lseek(fd, 0, addon.constants.SEEK_DATA);
  } catch (err) {
    return { error: `lseek(SEEK_DATA) unsupported: ${(err as Error).message}` };
  }
  try {
    return new RingSparseFile(addon, fd, path);
  } catch (err) {
    return { error: `io_uring unavailable: ${(err as Error).message}` };
  }
}

/**
 * Disjoint byte ranges [start, end), sorted, adjacent ones merged; at most `maxRanges` (an add
 * that would exceed it is dropped: callers use this only for knowledge they may lose).
 */
export class RangeSet {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];

  constructor(private readonly maxRanges: number) {}

  get count(): number {
    return this.starts.length;
  }

  /** Index of the first range whose end is > `pos`. */
  private firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] > pos) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    // Ranges touching or overlapping [start, end) are merged into one.
    let i = this.firstEndingAfter(start - 1); // ends >= start touch
    let j = i;
    let s = start;
    let e = end;
    while (j < this.starts.length && this.starts[j] <= end) {
      s = Math.min(s, this.starts[j]);
      e = Math.max(e, this.ends[j]);
      j++;
    }
    if (j === i && this.starts.length >= this.maxRanges) return;
    this.starts.splice(i, j - i, s);
    this.ends.splice(i, j - i, e);
  }

  remove(start: number, end: number): void {
    if (end <= start) return;
    let i = this.firstEndingAfter(start);
    while (i < this.starts.length && this.starts[i] < end) {
      const s = this.starts[i];
      const e = this.ends[i];
      if (s < start && e > end) {
        // Split in two (may exceed maxRanges by one; harmless).
        this.ends[i] = start;
        this.starts.splice(i + 1, 0, end);
        this.ends.splice(i + 1, 0, e);
        return;
      }
      if (s < start) {
        this.ends[i] = start;
        i++;
      } else if (e > end) {
        this.starts[i] = end;
        return;
      } else {
        this.starts.splice(i, 1);
        this.ends.splice(i, 1);
      }
    }
  }

  /**
   * Calls `fn(start, end, inSet)` for consecutive pieces covering [start, end), split at the
   * set's range boundaries.
   */
  forEachPiece(start: number, end: number, fn: (s: number, e: number, inSet: boolean) => void): void {
    let pos = start;
    let i = this.firstEndingAfter(start);
    while (pos < end) {
      if (i >= this.starts.length || this.starts[i] >= end) {
        fn(pos, end, false);
        return;
      }
      const s = this.starts[i];
      if (s > pos) {
        fn(pos, s, false);
        pos = s;
      }
      const e = Math.min(this.ends[i], end);
      fn(pos, e, true);
      pos = e;
      i++;
    }
  }
}
