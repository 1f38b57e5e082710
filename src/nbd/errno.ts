/**
 * The one table from raftblock errors to NBD wire errnos. Anything not listed is EIO: the
 * client learns the request failed without being told something untrue about why.
 */
import { IoError, RaftblockError } from '../common/errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js';

const byCode: Readonly<Record<string, number>> = {
  OUT_OF_RANGE: NBD_EINVAL,
  INVALID_ARGUMENT: NBD_EINVAL,
  READ_ONLY: NBD_EPERM,
  NO_SPACE: NBD_ENOSPC,
  NOT_SUPPORTED: NBD_ENOTSUP,
  UNAVAILABLE: NBD_EIO,
  TIMED_OUT: NBD_EIO,
  NOT_LEADER: NBD_EIO,
  STALE_EPOCH: NBD_EIO,
  CORRUPTION: NBD_EIO,
  IO_ERROR: NBD_EIO,
  SHUTTING_DOWN: NBD_ESHUTDOWN,
};

/** OS errno names (from Node's `err.code`, or IoError.errno) that have their own NBD errno. */
const byOsCode: Readonly<Record<string, number>> = {
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC, // spec: map EDQUOT and EFBIG to ENOSPC
  EFBIG: NBD_ENOSPC,
  EPERM: NBD_EPERM,
  EACCES: NBD_EPERM,
  EROFS: NBD_EPERM,
  EINVAL: NBD_EINVAL,
  EOPNOTSUPP: NBD_ENOTSUP,
  ENOTSUP: NBD_ENOTSUP,
};
const osErrnoNames: Readonly<Record<number, string>> = { 28: 'ENOSPC', 122: 'EDQUOT', 27: 'EFBIG', 1: 'EPERM', 13: 'EACCES', 30: 'EROFS', 22: 'EINVAL', 95: 'EOPNOTSUPP' };

export function nbdErrnoOf(err: unknown): number {
  if (err instanceof IoError) return byOsCode[osErrnoNames[err.errno] ?? ''] ?? NBD_EIO;
  if (err instanceof RaftblockError) return byCode[err.code] ?? NBD_EIO;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return byOsCode[code] ?? NBD_EIO;
  return NBD_EIO;
}
