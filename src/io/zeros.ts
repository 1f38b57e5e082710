/**
 * Zeros written where a range cannot be zeroed otherwise: by the fs backend (no fallocate in
 * Node's fs), by a store or an export on a filesystem that refuses the fallocate mode, and by
 * the WAL over new or cut segments.
 */
import { IoError } from '../common/errors.js';
import type { BlockFile } from './types.js';

/** errno of a filesystem without the fallocate mode asked for (tmpfs has no ZERO_RANGE). */
const EOPNOTSUPP = 95;

/** True for the failure of a fallocate mode the filesystem does not have (EOPNOTSUPP). */
export function isUnsupportedByFilesystem(err: unknown): boolean {
  return err instanceof IoError && err.errno === EOPNOTSUPP;
}

/**
 * Writes zeros over [from, to) of `file` from `zeros` (a buffer of zeros, aligned where the file
 * wants O_DIRECT alignment), a chunk of its length at a time. Nothing ever writes into `zeros`,
 * so one buffer serves every caller.
 */
export async function writeZeros(file: BlockFile, zeros: Buffer, from: number, to: number): Promise<void> {
  for (let off = from; off < to; off += zeros.length) {
    const n = Math.min(zeros.length, to - off);
    await file.pwrite(n === zeros.length ? zeros : zeros.subarray(0, n), off);
  }
}
