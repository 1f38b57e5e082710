/**
 * Loads the native addon (native/build/Release/raftblock_io.node) and describes its surface.
 * Loading fails softly: `loadNative()` returns the reason instead of throwing, so the caller
 * can fall back to the fs backend and say why.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
   * FS_IOC_FIEMAP: [from, to) pairs, flattened and in order, of the parts of [start, end) in
   * unwritten extents, at most `maxRanges` (past the last of that many, not looked at); empty
   * where the filesystem has no FIEMAP. Throws other errors. Absent from an addon built before
   * it (callers then report no unwritten extents: SEEK_DATA's holes stay holes).
   */
  unwrittenExtents?(fd: number, start: number, end: number, maxRanges: number): Float64Array;
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
    cached = { addon };
  } catch (err) {
    cached = { error: `addon failed to load: ${(err as Error).message}` };
  }
  return cached;
}

/**
 * The unwritten ranges of [start, end) of the file open as `fd` at `path` (unwrittenExtents, as
 * [from, to) pairs): none from an addon built before FIEMAP; its errors as IoError.
 */
export function unwrittenRangesOf(addon: NativeAddon, fd: number, path: string, start: number, end: number, maxRanges: number): [number, number][] {
  if (!addon.unwrittenExtents) return [];
  let flat: Float64Array;
  try {
    flat = addon.unwrittenExtents(fd, start, end, maxRanges);
  } catch (err) {
    throw toIoError(err, 'ioctl', path);
  }
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}
