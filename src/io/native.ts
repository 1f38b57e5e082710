/**
 * Loads the native addon (native/build/Release/raftblock_io.node) and describes its surface.
 * Loading fails softly: `loadNative()` returns the reason instead of throwing, so the caller
 * can fall back to the fs backend and say why.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assert } from '../common/assert.js';
import { toIoError } from './check.js';

/** One io_uring instance. Submissions are queued with the prep calls and sent by `submit()`. */
export interface NativeRing {
  /**
   * Queue a read/write/fsync/fallocate. `token` (0 <= token < slots) identifies the
   * operation in the completion array. Returns false when the submission queue is full
   * (call `submit()` and retry).
   */
  prepRead(token: number, fd: number, buf: Buffer, offset: number): boolean;
  prepWrite(token: number, fd: number, buf: Buffer, offset: number, rwFlags: number): boolean;
  prepWritev(token: number, fd: number, bufs: readonly Buffer[], offset: number, rwFlags: number): boolean;
  prepFsync(token: number, fd: number, datasync: boolean): boolean;
  prepFallocate(token: number, fd: number, mode: number, offset: number, length: number): boolean;
  /** io_uring_submit: hands every queued SQE to the kernel; returns how many. */
  submit(): number;
  /** Operations submitted (or queued) whose completion has not been delivered yet. */
  readonly inFlight: number;
  /** Tears the ring down now if idle, else once the last completion has been delivered. */
  close(): void;
}

export interface NativeAddon {
  /**
   * new Ring(entries, completions, onComplete): `completions` is an Int32Array of 2*slots
   * (token, result) pairs that the addon fills before calling `onComplete(count)` on the JS
   * thread. `result` is the CQE's res: bytes transferred, or -errno.
   */
  Ring: new (entries: number, completions: Int32Array, onComplete: (count: number) => void) => NativeRing;
  /** posix_memalign'd, zero-filled Buffer freed by its finalizer. */
  allocAligned(lengthBytes: number, alignmentBytes: number): Buffer;
  /** CRC32C of buf[start, end) continuing from seed, with the SSE4.2 instruction. */
  crc32c?(buf: Uint8Array, start: number, end: number, seed: number): number;
  /** True when this CPU has SSE4.2 (crc32c is only fast then). */
  hasHardwareCrc32c?: boolean;
  /** lseek(2); returns -1 for ENXIO (no data/hole past offset), throws other errors. */
  lseek(fd: number, offset: number, whence: number): number;
  /**
   * The allocation of [start, end): flattened [from, to, kind] triples (ExtentKind), in order,
   * each run touching the next, at most `maxRuns` (see BlockFile.extentMap), found with
   * SEEK_DATA/SEEK_HOLE and FIEMAP on a libuv pool thread. Rejects with errno and syscall set.
   * `fd` must stay open until the promise settles (ExtentQueries sees to it).
   */
  extentMap(fd: number, start: number, end: number, maxRuns: number): Promise<Float64Array>;
  /** extentMap on the calling thread; throws with errno and syscall set. */
  extentMapSync(fd: number, start: number, end: number, maxRuns: number): Float64Array;
  readonly constants: {
    RWF_DSYNC: number;
    O_DIRECT: number;
    SEEK_DATA: number;
    SEEK_HOLE: number;
    FALLOC_FL_KEEP_SIZE: number;
    FALLOC_FL_PUNCH_HOLE: number;
    FALLOC_FL_ZERO_RANGE: number;
  };
}

/**
 * The addon's calls that tell a file's holes and unwritten extents: plain syscalls on the
 * calling thread or a libuv pool thread, no io_uring, so they serve the fs backend too where a
 * seccomp profile refuses io_uring.
 */
export type ExtentAddon = Pick<NativeAddon, 'lseek' | 'extentMap' | 'constants'>;

let cached: { addon: NativeAddon } | { error: string } | undefined;

/** The addon, or the reason it cannot be used here. */
export function loadNative(): { addon: NativeAddon } | { error: string } {
  if (cached) return cached;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const path = join(root, 'native', 'build', 'Release', 'raftblock_io.node');
  if (!existsSync(path)) {
    cached = { error: `addon not built (${path} missing)` };
    return cached;
  }
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    // A build from older sources lacks calls this code makes: it must be rebuilt, not half used.
    if (typeof addon.extentMap !== 'function' || typeof addon.extentMapSync !== 'function') cached = { error: `addon at ${path} predates extentMap: rebuild it (npm run build:native)` };
    else cached = { addon };
  } catch (err) {
    cached = { error: `addon failed to load: ${(err as Error).message}` };
  }
  return cached;
}

/**
 * Extent queries on libuv's thread pool at once, process-wide. A query there waits as long as a
 * punch or zero of the same file runs (seconds for gigabytes on ext4), holding its thread; the
 * pool (4 threads unless UV_THREADPOOL_SIZE says more) also runs the fs calls (open, fstat,
 * fdatasync, the file export's large reads and writes), which keep the other half.
 */
export const extentQueriesMaxRunning = 2;
let extentQueriesRunning = 0;
/** Files with a query waiting for a place on the pool, in arrival order. */
const waitingForPool: ExtentQueries[] = [];

interface ExtentQuery {
  start: number;
  end: number;
  maxRuns: number;
  resolve: (runs: Float64Array) => void;
  reject: (err: Error) => void;
}

/**
 * One file's extent queries (addon.extentMap): one at a time, since a second would wait behind
 * the same lock as the first and hold a second pool thread doing so; errors as IoError.
 * The worker uses the descriptor number after the call returns, and once closed that number may
 * name another file the process opened since: the owner refuses new queries, waits for
 * `drained()`, and only then closes the descriptor (as PgStore closes no file a pin holds).
 */
export class ExtentQueries {
  private running = false;
  private waiting = false;
  private readonly queued: ExtentQuery[] = [];
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly addon: ExtentAddon,
    private readonly fd: number,
    private readonly path: string,
  ) {}

  /** addon.extentMap over [start, end), at most `maxRuns` runs. */
  map(start: number, end: number, maxRuns: number): Promise<Float64Array> {
    assert(Number.isSafeInteger(start) && start >= 0 && Number.isSafeInteger(end) && end >= start, `extentMap: bad range [${start}, ${end})`);
    assert(Number.isSafeInteger(maxRuns) && maxRuns >= 1, `extentMap: bad maxRuns ${maxRuns}`);
    return new Promise((resolve, reject) => {
      this.queued.push({ start, end, maxRuns, resolve, reject });
      this.startNext();
    });
  }

  /** Resolves once no query of this file is running or queued: the descriptor may be closed. */
  drained(): Promise<void> {
    if (!this.running && this.queued.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private startNext(): void {
    if (this.running || this.waiting || this.queued.length === 0) return;
    if (extentQueriesRunning >= extentQueriesMaxRunning) {
      this.waiting = true;
      waitingForPool.push(this);
      return;
    }
    const q = this.queued.shift() as ExtentQuery;
    this.running = true;
    extentQueriesRunning++;
    let answer: Promise<Float64Array>;
    try {
      answer = this.addon.extentMap(this.fd, q.start, q.end, q.maxRuns);
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (runs) => this.finished(q, runs, undefined),
      (err: unknown) => this.finished(q, undefined, toIoError(err, 'lseek', this.path)),
    );
  }

  private finished(q: ExtentQuery, runs: Float64Array | undefined, err: Error | undefined): void {
    this.running = false;
    extentQueriesRunning--;
    if (runs !== undefined) q.resolve(runs);
    else q.reject(err as Error);
    // Files that waited for the place go first; this one's next query queues behind them.
    while (extentQueriesRunning < extentQueriesMaxRunning && waitingForPool.length > 0) {
      const next = waitingForPool.shift() as ExtentQueries;
      next.waiting = false;
      next.startNext();
    }
    this.startNext();
    if (!this.running && this.queued.length === 0 && this.drainWaiters.length > 0) {
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }
}

/**
 * lseek(SEEK_DATA or SEEK_HOLE) on `fd` through the addon, on the calling thread: the offset
 * found, or -1 where there is no data (or no hole) at or past `offsetBytes` (the addon answers
 * ENXIO so); other failures as IoError('lseek') naming `path`.
 */
export function seekThroughAddon(addon: ExtentAddon, fd: number, path: string, offsetBytes: number, whence: 'data' | 'hole'): number {
  try {
    return addon.lseek(fd, offsetBytes, whence === 'data' ? addon.constants.SEEK_DATA : addon.constants.SEEK_HOLE);
  } catch (err) {
    throw toIoError(err, 'lseek', path);
  }
}
