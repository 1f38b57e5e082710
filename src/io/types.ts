/**
 * BlockIo: the one interface raftblock uses for durable, aligned file I/O.
 *
 * Two implementations sit behind it: the io_uring addon (`uring`: O_DIRECT, RWF_DSYNC writes,
 * batched submission, completions drained on the JS thread) and plain `fs` (`fs`: buffered
 * pwrite + fdatasync), chosen by `openBlockIo()` in ./select.ts and logged.
 *
 * Rules every caller follows, whatever the backend (the fs backend asserts them too, so a bug
 * cannot hide behind it):
 *  - offsets and lengths are multiples of `alignmentBytes` (4 KiB);
 *  - buffers handed to pread/pwrite/pwritev come from `allocAligned` (or are 4 KiB-aligned
 *    slices of one), and are not touched until the returned promise settles;
 *  - an operation fails with `IoError` carrying the positive `errno` and the `syscall`.
 */

export type IoBackendKind = 'uring' | 'fs';
/** What a configuration may ask for: a backend, or `auto` (io_uring where it works, else fs). */
export type IoBackendChoice = IoBackendKind | 'auto';

/** Every offset, length and buffer address handed to BlockIo is a multiple of this. */
export const ioAlignmentBytes = 4096;

export interface OpenFileOptions {
  /** Create the file (mode 0644) when it does not exist. Default false. */
  create?: boolean;
  /** Open read-only. Default false (read-write). */
  readOnly?: boolean;
}

/** An open file. Not safe to use after `close()` resolves. */
export interface BlockFile {
  readonly path: string;
  /** True when the file bypasses the page cache (O_DIRECT). */
  readonly direct: boolean;

  /**
   * Reads `buf.length` bytes at `offsetBytes` into `buf`; resolves with the bytes read,
   * fewer only at end of file.
   */
  pread(buf: Buffer, offsetBytes: number): Promise<number>;
  /**
   * Writes all of `buf` at `offsetBytes`. With `dsync` the data is durable when the promise
   * resolves (RWF_DSYNC on io_uring; pwrite then fdatasync on fs).
   */
  pwrite(buf: Buffer, offsetBytes: number, dsync?: boolean): Promise<void>;
  /** Writes the buffers back to back from `offsetBytes` in one call; `dsync` as for pwrite. */
  pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync?: boolean): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  fdatasync(): Promise<void>;
  /**
   * Makes the file's data and metadata durable (fsync): as fdatasync, and also a change that
   * fdatasync may leave in the journal, such as a truncate that kept the size (it frees blocks
   * allocated past the end of the file).
   */
  fsync(): Promise<void>;
  /**
   * Deallocates a range; reads of it return zeros; the file size is unchanged. The fs backend
   * writes zeros; uring fails with EOPNOTSUPP (errno 95) where the filesystem cannot punch.
   */
  punchHole(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * Makes a range read as zeros, kept allocated (FALLOC_FL_ZERO_RANGE; the fs backend writes
   * zeros). uring fails with EOPNOTSUPP (errno 95) where the filesystem lacks the mode (tmpfs,
   * and others): the caller writes zeros instead.
   */
  zeroRange(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * lseek(SEEK_DATA): the first offset >= `offsetBytes` holding data, or -1 when none.
   * A backend that cannot tell holes from data (fs without the addon) reports everything
   * below EOF as data.
   */
  seekData(offsetBytes: number): Promise<number>;
  /** lseek(SEEK_HOLE): the first offset >= `offsetBytes` in a hole (EOF counts as one), or -1 at or past EOF. */
  seekHole(offsetBytes: number): Promise<number>;
  /**
   * The allocation of [startBytes, endBytes) as flattened [from, to, kind] triples (ExtentKind),
   * in order from `startBytes`, each run touching the next: data (SEEK_DATA), holes, and within
   * holes the unwritten extents (FIEMAP: a zeroRange's; allocated, read as zeros, and counted
   * as holes by SEEK_DATA). Neighbouring runs of a kind are one. At most `maxRuns`: with that
   * many the runs may end before `endBytes` (past them, not looked at). Asked off the event
   * loop: on ext4 these calls wait for a punch or zero of the same file, seconds for
   * gigabytes. A backend that cannot tell holes (fs without the addon) reports data up to the
   * end of the file.
   */
  extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array>;
  /** The file size in bytes. */
  size(): Promise<number>;
  /** Sets the file size (ftruncate). */
  truncate(sizeBytes: number): Promise<void>;
  /**
   * Closes the file once its extent queries (which use the descriptor from a pool thread) have
   * ended; waits for nothing else — callers settle their own I/O first.
   */
  close(): Promise<void>;
}

/** How a run of an extent map is allocated (the addon numbers them so too). */
export const enum ExtentKind {
  /** Allocated and written, or cached (SEEK_DATA). */
  Data = 0,
  /** Unallocated: reads as zeros. */
  Hole = 1,
  /** Allocated but unwritten (FALLOC_FL_ZERO_RANGE, preallocation): reads as zeros. */
  Unwritten = 2,
}

/** A backend instance. One per process is enough; it may hold a ring and an fd table. */
export interface BlockIo {
  readonly kind: IoBackendKind;
  readonly alignmentBytes: number;
  /** Opens (optionally creates) a file. uring opens it O_DIRECT; fs opens it buffered. */
  open(path: string, options?: OpenFileOptions): Promise<BlockFile>;
  /**
   * A zero-filled buffer whose address and length are multiples of `alignmentBytes`.
   * Allocate once (a slab) and carve reusable slices with `buf.subarray(a, b)` at aligned
   * offsets; nothing should be allocated per I/O.
   */
  allocAligned(lengthBytes: number): Buffer;
  /** Releases the backend (the ring) once in-flight I/O has drained. */
  close(): Promise<void>;
}
