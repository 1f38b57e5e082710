import { assert } from '../common/assert.js';
import { IoError } from '../common/errors.js';
import { ioAlignmentBytes } from './types.js';

/** Asserts the BlockIo alignment contract for one request (both backends call it). */
export function checkAligned(what: string, offsetBytes: number, lengthBytes: number): void {
  assert(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, `${what}: bad offset ${offsetBytes}`);
  assert(offsetBytes % ioAlignmentBytes === 0, `${what}: offset ${offsetBytes} not ${ioAlignmentBytes}-aligned`);
  assert(lengthBytes % ioAlignmentBytes === 0, `${what}: length ${lengthBytes} not ${ioAlignmentBytes}-aligned`);
}

/** Converts a Node fs error (or an addon error carrying errno) into IoError. */
export function toIoError(err: unknown, syscall: string, path?: string): IoError {
  if (err instanceof IoError) return err;
  const e = err as { errno?: number; code?: string; message?: string; syscall?: string };
  // Node reports errno negative (libuv convention); the addon reports it positive.
  const errno = typeof e.errno === 'number' ? Math.abs(e.errno) : 5; /* EIO */
  const sc = e.syscall ?? syscall;
  const msg = `${sc}${path ? ` ${path}` : ''} failed: ${e.code ?? 'errno ' + errno}${e.message ? ` (${e.message})` : ''}`;
  return new IoError(sc, errno, msg);
}

/**
 * The refusal of an operation on a closed file (EBADF). Never the fd: once closed, its number
 * may already name another file the process opened since (a data file, a WAL segment), and a
 * late write through a stale handle would land there.
 */
export function closedFileError(op: string, path: string): IoError {
  return new IoError(op, 9 /* EBADF */, `${op} on ${path} after it was closed`);
}
