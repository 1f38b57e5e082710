/**
 * BlockBackend over one local file with plain node:fs (pread/pwrite through FileHandle,
 * fdatasync). One instance is shared by every connection to the export, so a FLUSH on any
 * connection (fdatasync of the shared file) covers writes completed on all of them: the export
 * can advertise CAN_MULTI_CONN.
 *
 * Holes and deallocation: with the native addon (./file-sparse.ts) allocation comes from
 * lseek(SEEK_DATA/SEEK_HOLE) and FIEMAP, walked on a pool thread for BLOCK_STATUS (on ext4 the
 * walk waits for a punch or zero of the file): a real hole is reported HOLE|ZERO (READ sends it
 * as OFFSET_HOLE), allocated blocks as data, whatever they hold. TRIM and WRITE_ZEROES punch a
 * hole (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE; the kernel zeroes partial blocks at the edges),
 * WRITE_ZEROES with NO_HOLE uses FALLOC_FL_ZERO_RANGE, for any size. ZERO_RANGE leaves allocated
 * (unwritten) extents, which FIEMAP tells and which are reported ZERO without HOLE; SEEK_DATA
 * counts their cached pages as data, so the ranges zeroed that way since the export started
 * (and not written since) are also remembered, bounded, and reported ZERO without HOLE. A
 * filesystem refusing a mode gets zeros written instead (and FAST_ZERO then fails with
 * NotSupported).
 *
 * Without the addon (not built, or io_uring refused), the portable fallback:
 * - Holes: allocation is inferred from content: data is scanned in `zeroGranuleBytes`
 *   granules (aligned to the device) and an all-zero granule is reported as a hole that reads as zeros. READ sends such runs as
 *   OFFSET_HOLE; BLOCK_STATUS reports them HOLE|ZERO. A written block of zeros is therefore
 *   indistinguishable from an unallocated one, which the spec permits (the server MAY report
 *   a hole where no trim was requested).
 * - Punching holes (fallocate): TRIM and WRITE_ZEROES of at least `punchMinBytes` run
 *   `fallocate --punch-hole` (or `--zero-range` with NO_HOLE) from util-linux in a child
 *   process: a few milliseconds, but it frees the space and costs no data I/O. Smaller ranges,
 *   or when the tool fails, are written with zeros in bounded chunks from one shared zero
 *   buffer. FAST_ZERO fails with NotSupported only when a large range would need that slow path.
 *
 * CACHE reads the range (bounded) to warm the page cache.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants, promises as fsp, readSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { assert } from '../common/assert.js';
import { InvalidArgument, IoError, NotSupported, RaftblockError } from '../common/errors.js';
import type { loadNative } from '../io/native.js';
import { ExtentKind } from '../io/types.js';
import { isUnsupportedByFilesystem } from '../io/zeros.js';
import type { BackendCapabilities, BlockBackend, BlockExtent, BlockSizes } from './backend.js';
import { openSparseFile, RangeSet, type SparseFile } from './file-sparse.js';
import { holesTrusted } from '../io/holes-trusted.js';
import { maxPayloadBytes } from './protocol.js';

/** Granule of zero detection: a granule-aligned all-zero run of this size is reported as a hole. */
export const zeroGranuleBytes = 4096;
/** Largest window read to answer one BLOCK_STATUS (the reply may cover less than asked). */
export const blockStatusWindowBytes = 4 * 1024 * 1024;
/** Ranges at least this long are zeroed/trimmed with fallocate rather than written. */
export const punchMinBytes = 1024 * 1024;
/** Chunk of zeros written at a time on the slow path. */
const zeroChunkBytes = 1024 * 1024;
/**
 * Reads and writes up to this size are done with synchronous pread/pwrite on the event loop
 * instead of a round trip through libuv's thread pool. For page-cache hits that is a few
 * microseconds, far below the cost of the hop (two thread wakeups and a promise), and it lets
 * every reply for one socket read go out in a single writev. Up to 1 MiB the copy into the page
 * cache (~50-150 µs for 512 KiB here) is still cheaper than the hop: measured with
 * `npm run bench -- nbd`, 512 KiB writes cost ~95-120 µs of CPU synchronously against ~180 µs
 * through the pool. Larger transfers stay async so one huge request (up to 32 MiB) never stalls
 * other connections for long. 0 disables.
 */
export const defaultSyncIoMaxBytes = 1024 * 1024;
/** Scratch windows for BLOCK_STATUS/CACHE that may exist at once (bounds their memory). */
const maxScratchBuffers = 4;
/** CACHE warms at most this many bytes per request. */
const cacheMaxBytes = 32 * 1024 * 1024;
/** Most extents one BLOCK_STATUS reply built from the file's extent map carries. */
const seekStatusMaxExtents = 1024;
/** Ranges zeroed with NO_HOLE remembered to report them allocated (see the header). */
const allocatedZeroMaxRanges = 4096;

const zeros = Buffer.alloc(Math.max(zeroChunkBytes, zeroGranuleBytes));

export interface FileBackendOptions {
  /** Size for a file that does not exist yet (created sparse). Required when absent. */
  createSizeBytes?: number;
  readOnly?: boolean;
  /** See defaultSyncIoMaxBytes. */
  syncIoMaxBytes?: number;
  /** The addon to use instead of loading it; `{ error }` forces the portable fallback. */
  native?: ReturnType<typeof loadNative>;
  /**
   * Whether the file's file system may be trusted with SEEK_DATA over buffered writes (see
   * io/holes-trusted.ts, the default); where not, the portable fallback tells holes from content.
   */
  holesTrusted?: (path: string) => Promise<boolean>;
}

/** How allocation is found and ranges are deallocated (see the header). */
export type SparseMode = { kind: 'native' } | { kind: 'fallback'; reason: string };

export class FileBackend implements BlockBackend {
  readonly capabilities: BackendCapabilities;
  readonly blockSizes: BlockSizes = { minimum: 1, preferred: 4096, maximum: maxPayloadBytes };
  private syncRunning: Promise<void> | null = null;
  private syncQueued: Promise<void> | null = null;
  private closed = false;
  private readonly scratch: Buffer[] = [];
  private scratchCreated = 0;
  private readonly scratchWaiters: ((b: Buffer) => void)[] = [];
  /** SEEK_DATA/SEEK_HOLE and fallocate, or null on the portable fallback. */
  private readonly sparse: SparseFile | null;
  readonly sparseMode: SparseMode;
  /** Zeroed with ZERO_RANGE since open and not written since: allocated zeros. */
  private readonly allocatedZeros = new RangeSet(allocatedZeroMaxRanges);
  /** Cleared when the filesystem refuses the fallocate mode (EOPNOTSUPP). */
  private nativePunch = true;
  private nativeZeroRange = true;
  /**
   * Punches and zero ranges (fallocate) of the file under way. While one runs, ext4 holds the
   * inode's locks (a second for gigabytes), and a read (one that must go to the disk), write or
   * lseek of the file waits for it. The synchronous ones would hold the event loop, every
   * client's, that long; on the thread pool each would hold a thread, and a queue of them all
   * four (other exports' syncs, large I/O and block status behind them). So they wait here, in
   * JS, until no deallocation runs (`while (deallocationsInFlight) await nextDeallocationEnd()`,
   * the synchronous call made in the same turn as the last check), and a deallocation asked
   * while any of them waits is held until they have run (heldDeallocations): a stream of TRIMs
   * (an fstrim) would otherwise hold them for its whole length.
   */
  private deallocationsInFlight = 0;
  /** Short reads, writes and hole checks waiting for the deallocations under way to end. */
  private ioWaiters: (() => void)[] = [];
  /** Deallocations asked while ioWaiters waited: started once those have run. */
  private heldDeallocations: (() => void)[] = [];

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly sizeBytes: number,
    readOnly: boolean,
    /** False once fallocate failed once (tool missing or filesystem without support). */
    private canPunch: boolean,
    private readonly syncIoMaxBytes: number,
    sparse: SparseFile | { error: string },
  ) {
    this.sparse = 'error' in sparse ? null : sparse;
    this.sparseMode = 'error' in sparse ? { kind: 'fallback', reason: sparse.error } : { kind: 'native' };
    this.capabilities = {
      readOnly,
      canTrim: !readOnly,
      canWriteZeroes: !readOnly,
      canFastZero: !readOnly,
      canCache: true,
      canMultiConn: true,
      canBlockStatus: true,
    };
  }

  /** Opens `path`, creating a sparse file of `createSizeBytes` if it does not exist. */
  static async open(path: string, opts: FileBackendOptions = {}): Promise<FileBackend> {
    const readOnly = opts.readOnly ?? false;
    let fh: FileHandle;
    try {
      fh = await fsp.open(path, readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw wrapFsError('open', err);
      if (opts.createSizeBytes === undefined) throw new InvalidArgument(`${path} does not exist and no size was given to create it`);
      if (readOnly) throw new InvalidArgument(`${path} does not exist; a read-only export cannot create it`);
      try {
        fh = await fsp.open(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
        await fh.truncate(opts.createSizeBytes); // sparse: no blocks allocated
        await fh.sync();
      } catch (e) {
        throw wrapFsError('create', e);
      }
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new InvalidArgument(`${path} is not a regular file`);
    }
    // Writes here go through the page cache: holes come from SEEK_DATA only where it counts
    // dirty pages as data, else a READ or BLOCK_STATUS right after a write could miss it.
    const sparse = (await (opts.holesTrusted ?? holesTrusted)(path))
      ? openSparseFile(fh.fd, path, opts.native)
      : { error: `the file system of ${path} is not one known to count data still in the page cache in SEEK_DATA` };
    return new FileBackend(path, fh, st.size, readOnly, true, opts.syncIoMaxBytes ?? defaultSyncIoMaxBytes, sparse);
  }

  size(): number {
    return this.sizeBytes;
  }

  async read(offset: number, length: number, into: Buffer): Promise<BlockExtent[] | undefined> {
    await this.preadFully(into, length, offset);
    if (this.sparse === null) return zeroRuns(into, length, offset, zeroGranuleBytes);
    // A hole reads as zeros and spans whole aligned blocks: without an all-zero aligned granule
    // there is none, and the check (one byte per granule for data) is cheaper than an lseek.
    if (!hasZeroGranule(into, length, offset, zeroGranuleBytes)) return undefined;
    while (this.deallocationsInFlight !== 0) await this.nextDeallocationEnd();
    const hole = this.sparse.seekHole(offset);
    if (hole >= offset + length) return undefined;
    // On the event loop, as the SEEK_HOLE above that decides whether a READ needs the map at
    // all: a pool round trip for every read of a sparse range would cost more than the walk of
    // one READ's range (32 MiB at most).
    return this.extentsOf(this.sparse.extentMapSync(offset, offset + length, Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    const sync = data.length <= this.syncIoMaxBytes;
    while (sync && this.deallocationsInFlight !== 0) await this.nextDeallocationEnd();
    // After the wait: a NO_HOLE zero of this range that ran meanwhile is under this write's data.
    if (this.allocatedZeros.count !== 0) this.allocatedZeros.remove(offset, offset + data.length);
    let done = 0;
    try {
      if (sync) {
        while (done < data.length) done += writeSync(this.fh.fd, data, done, data.length - done, offset + done);
      }
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
        assert(bytesWritten > 0, 'pwrite wrote nothing');
        done += bytesWritten;
      }
    } catch (err) {
      throw wrapFsError('pwrite', err);
    }
    // A zero that ran beside a write on the pool may have landed first: not known to be zeros.
    if (!sync && this.allocatedZeros.count !== 0) this.allocatedZeros.remove(offset, offset + data.length);
    if (fua) await this.flush();
  }

  /**
   * fdatasync, coalesced: callers that arrive while one runs share the next one (which starts
   * after theirs began, so it covers every write they completed before calling).
   */
  flush(): Promise<void> {
    if (this.syncRunning === null) {
      this.syncRunning = this.runSync();
      return this.syncRunning;
    }
    if (this.syncQueued === null) {
      const running = this.syncRunning;
      this.syncQueued = running.then(
        () => this.startQueuedSync(),
        () => this.startQueuedSync(),
      );
    }
    return this.syncQueued;
  }

  private startQueuedSync(): Promise<void> {
    this.syncQueued = null;
    this.syncRunning = this.runSync();
    return this.syncRunning;
  }

  private async runSync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (err) {
      throw wrapFsError('fdatasync', err);
    } finally {
      // Only clear if no queued sync replaced us.
      if (this.syncQueued === null) this.syncRunning = null;
    }
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    if (this.sparse !== null) await this.nativeZero(this.sparse, offset, length, false, false);
    else await this.zeroRange(offset, length, false, false);
    if (fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, flags: { fua: boolean; noHole: boolean; fastZero: boolean }): Promise<void> {
    if (this.sparse !== null) await this.nativeZero(this.sparse, offset, length, flags.noHole, flags.fastZero);
    else await this.zeroRange(offset, length, flags.noHole, flags.fastZero);
    if (flags.fua) await this.flush();
  }

  /** fallocate through the addon; zeros written only where the filesystem refuses the mode. */
  private async nativeZero(sparse: SparseFile, offset: number, length: number, keepAllocated: boolean, fastOnly: boolean): Promise<void> {
    if (keepAllocated ? this.nativeZeroRange : this.nativePunch) {
      try {
        if (keepAllocated) {
          // Remembered before the call, so a write that starts meanwhile removes it again.
          this.allocatedZeros.add(offset, offset + length);
          try {
            await this.deallocating(() => sparse.zeroRange(offset, length));
          } catch (err) {
            this.allocatedZeros.remove(offset, offset + length);
            throw err;
          }
        } else {
          await this.deallocating(() => sparse.punchHole(offset, length));
          this.allocatedZeros.remove(offset, offset + length);
        }
        return;
      } catch (err) {
        if (!isUnsupportedByFilesystem(err)) throw err;
        if (keepAllocated) this.nativeZeroRange = false;
        else this.nativePunch = false;
      }
    }
    if (fastOnly) throw new NotSupported('this filesystem cannot zero a range faster than writing zeros');
    await this.writeZeros(offset, length);
    this.allocatedZeros.remove(offset, offset + length);
  }

  private async zeroRange(offset: number, length: number, keepAllocated: boolean, fastOnly: boolean): Promise<void> {
    if (length >= punchMinBytes && this.canPunch) {
      try {
        await this.deallocating(() => runFallocate(keepAllocated ? '--zero-range' : '--punch-hole', offset, length, this.path));
        return;
      } catch {
        this.canPunch = false;
      }
    }
    if (fastOnly && length >= punchMinBytes) throw new NotSupported('cannot zero this range faster than writing zeros');
    await this.writeZeros(offset, length);
  }

  /**
   * Runs `fallocate`, counted as under way until it settles (see deallocationsInFlight); held
   * first while short I/O waits for the ones under way.
   */
  private async deallocating(fallocate: () => Promise<void>): Promise<void> {
    while (this.ioWaiters.length > 0) await new Promise<void>((resolve) => this.heldDeallocations.push(resolve));
    this.deallocationsInFlight++;
    try {
      await fallocate();
    } finally {
      if (--this.deallocationsInFlight === 0) {
        const waiters = this.ioWaiters;
        this.ioWaiters = [];
        for (const wake of waiters) wake();
        // After the woken requests' continuations (microtasks) have made their calls.
        if (this.heldDeallocations.length > 0) {
          setImmediate(() => {
            const held = this.heldDeallocations;
            this.heldDeallocations = [];
            for (const go of held) go();
          });
        }
      }
    }
  }

  /** Resolves when the deallocations under way have all ended (callers check again). */
  private nextDeallocationEnd(): Promise<void> {
    return new Promise<void>((resolve) => this.ioWaiters.push(resolve));
  }

  /** Writes zeros over the range in bounded chunks from the shared zero buffer. */
  private async writeZeros(offset: number, length: number): Promise<void> {
    let done = 0;
    try {
      while (done < length) {
        const n = Math.min(zeroChunkBytes, length - done);
        const { bytesWritten } = await this.fh.write(zeros, 0, n, offset + done);
        assert(bytesWritten > 0, 'pwrite wrote nothing');
        done += bytesWritten;
      }
    } catch (err) {
      throw wrapFsError('pwrite', err);
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    const buf = await this.takeScratch();
    try {
      const end = offset + Math.min(length, cacheMaxBytes);
      for (let pos = offset; pos < end; pos += buf.length) {
        await this.preadFully(buf, Math.min(buf.length, end - pos), pos);
      }
    } finally {
      this.giveScratch(buf);
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    // On a pool thread: on ext4 the map waits for a punch or zero of this file (a WRITE_ZEROES
    // of gigabytes takes seconds), and the other clients must not wait with it.
    if (this.sparse !== null) return this.extentsOf(await this.sparse.extentMap(offset, offset + length, seekStatusMaxExtents), seekStatusMaxExtents);
    const window = Math.min(length, blockStatusWindowBytes);
    const buf = await this.takeScratch();
    try {
      await this.preadFully(buf, window, offset);
      return zeroRuns(buf, window, offset, zeroGranuleBytes) ?? [{ length: window, hole: false, zero: false }];
    } finally {
      this.giveScratch(buf);
    }
  }

  /**
   * The extents of an extent map (BlockFile.extentMap's triples), at most `maxExtents` of them
   * (the last may then end before the map does). Holes read as zeros; unwritten extents, and
   * holes the export zeroed with NO_HOLE, are reported ZERO without HOLE (they are allocated),
   * as is data the export zeroed so (SEEK_DATA counts cached pages of unwritten extents as data).
   */
  private extentsOf(runs: Float64Array, maxExtents: number): BlockExtent[] {
    const out: BlockExtent[] = [];
    const push = (len: number, hole: boolean, zero: boolean): void => {
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === hole && last.zero === zero) last.length += len;
      else out.push({ length: len, hole, zero });
    };
    const holePiece = (s: number, e: number, zeroed: boolean): void => push(e - s, !zeroed, true);
    const dataPiece = (s: number, e: number, zeroed: boolean): void => push(e - s, false, zeroed);
    // One more than asked, so that the last one kept is whole (no later run joins it).
    for (let i = 0; i + 2 < runs.length && out.length <= maxExtents; i += 3) {
      const from = runs[i];
      const to = runs[i + 1];
      const kind = runs[i + 2] as ExtentKind;
      if (kind === ExtentKind.Unwritten) push(to - from, false, true);
      else if (this.allocatedZeros.count === 0) push(to - from, kind === ExtentKind.Hole, kind === ExtentKind.Hole);
      else this.allocatedZeros.forEachPiece(from, to, kind === ExtentKind.Hole ? holePiece : dataPiece);
    }
    if (out.length > maxExtents) out.length = maxExtents;
    assert(out.length > 0, 'block status covers at least one byte');
    return out;
  }

  /**
   * A window-sized buffer for block status and cache. At most `maxScratchBuffers` exist; further
   * callers queue, so a client flooding BLOCK_STATUS cannot make the backend allocate without bound.
   */
  private async takeScratch(): Promise<Buffer> {
    const b = this.scratch.pop();
    if (b !== undefined) return b;
    if (this.scratchCreated < maxScratchBuffers) {
      this.scratchCreated++;
      return Buffer.allocUnsafeSlow(blockStatusWindowBytes);
    }
    return new Promise((resolve) => this.scratchWaiters.push(resolve));
  }

  private giveScratch(b: Buffer): void {
    const w = this.scratchWaiters.shift();
    if (w) w(b);
    else this.scratch.push(b);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.capabilities.readOnly) await this.flush();
    // The descriptor is closed only once no extent query on a pool thread uses it.
    await this.sparse?.close();
    await this.fh.close();
  }

  /** Reads exactly `length` bytes; past the end of the file (shrunk underneath us) reads zeros. */
  private async preadFully(into: Buffer, length: number, offset: number): Promise<void> {
    // A short read is synchronous: never while a deallocation runs (see deallocationsInFlight).
    const sync = length <= this.syncIoMaxBytes;
    while (sync && this.deallocationsInFlight !== 0) await this.nextDeallocationEnd();
    let done = 0;
    try {
      while (done < length) {
        const bytesRead = sync
          ? readSync(this.fh.fd, into, done, length - done, offset + done)
          : (await this.fh.read(into, done, length - done, offset + done)).bytesRead;
        if (bytesRead === 0) {
          into.fill(0, done, length);
          return;
        }
        done += bytesRead;
      }
    } catch (err) {
      throw wrapFsError('pread', err);
    }
  }
}

/** True when `buf[0, length)` holds a device-aligned all-zero granule. */
export function hasZeroGranule(buf: Buffer, length: number, baseOffset: number, granule: number): boolean {
  for (let pos = (granule - (baseOffset % granule)) % granule; pos + granule <= length; pos += granule) {
    if (buf[pos] === 0 && buf.compare(zeros, 0, granule, pos, pos + granule) === 0) return true;
  }
  return false;
}

/**
 * Splits `buf[0, length)` (device bytes from `baseOffset`) into data and zero runs.
 * Only whole granules aligned to the device count as zero; returns undefined when there is no
 * zero granule at all (the common case for data: no allocation).
 */
export function zeroRuns(buf: Buffer, length: number, baseOffset: number, granule: number): BlockExtent[] | undefined {
  let runs: BlockExtent[] | undefined;
  // First granule boundary at or after baseOffset, relative to buf.
  let pos = (granule - (baseOffset % granule)) % granule;
  let dataStart = 0; // start of the pending data run
  while (pos + granule <= length) {
    if (buf[pos] === 0 && buf.compare(zeros, 0, granule, pos, pos + granule) === 0) {
      let end = pos + granule;
      while (end + granule <= length && buf[end] === 0 && buf.compare(zeros, 0, granule, end, end + granule) === 0) end += granule;
      runs ??= [];
      if (pos > dataStart) runs.push({ length: pos - dataStart, hole: false, zero: false });
      runs.push({ length: end - pos, hole: true, zero: true });
      dataStart = end;
      pos = end;
    } else {
      pos += granule;
    }
  }
  if (runs === undefined) return undefined;
  if (dataStart < length) runs.push({ length: length - dataStart, hole: false, zero: false });
  return runs;
}

function runFallocate(mode: '--punch-hole' | '--zero-range', offset: number, length: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('fallocate', [mode, '--offset', String(offset), '--length', String(length), path], { timeout: 60_000 }, (err) =>
      err ? reject(err) : resolve(),
    );
  });
}

const osErrnos: Record<string, number> = { ENOSPC: 28, EDQUOT: 122, EFBIG: 27, EIO: 5, EACCES: 13, EPERM: 1, EROFS: 30, EINVAL: 22 };

function wrapFsError(syscall: string, err: unknown): RaftblockError {
  if (err instanceof RaftblockError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const errno = osErrnos[code] ?? Math.abs((err as NodeJS.ErrnoException).errno ?? 5);
  return new IoError(syscall, errno, `${syscall}: ${(err as Error).message}`);
}
