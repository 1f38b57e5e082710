/**
 * Chooses the BlockIo backend: io_uring + O_DIRECT where it works, else plain fs.
 * `auto` probes for real (ring creation, an O_DIRECT open, a RWF_DSYNC write and a read back in
 * the directory that will hold the data), so seccomp filters, tmpfs and old kernels all land on
 * fs. One log line says which backend is in use and why.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgument, RaftblockError } from '../common/errors.js';
import { type Logger, createLogger } from '../common/log.js';
import { FsBlockIo } from './fs.js';
import { holesTrusted } from './holes-trusted.js';
import { loadNative } from './native.js';
import type { BlockIo, IoBackendChoice } from './types.js';
import { type DurableWriteMode, UringBlockIo, defaultRingEntries } from './uring.js';

export interface OpenBlockIoOptions {
  /** `uring` fails when io_uring/O_DIRECT cannot be used; `fs` never tries; `auto` probes. */
  backend?: IoBackendChoice;
  /** Directory the files will live in; the probe writes a scratch file there. */
  probeDir: string;
  ringEntries?: number;
  /** How uring makes a durable write durable (see DurableWriteMode). */
  durableWrites?: DurableWriteMode;
  logger?: Logger;
  /** The addon to use instead of loading it (tests simulate a missing or refusing addon). */
  native?: ReturnType<typeof loadNative>;
  /** Whether the fs backend may trust SEEK_DATA in `probeDir` (io/holes-trusted.ts, the default). */
  holesTrusted?: (path: string) => Promise<boolean>;
}

/** Parses a backend name from configuration (the CLI reads RAFTBLOCK_IO and passes it here). */
export function parseIoBackendChoice(text: string | undefined): IoBackendChoice {
  if (text === undefined || text === '') return 'auto';
  if (text === 'uring' || text === 'fs' || text === 'auto') return text;
  throw new InvalidArgument(`I/O backend must be uring, fs or auto, got ${JSON.stringify(text)}`);
}

export async function openBlockIo(options: OpenBlockIoOptions): Promise<BlockIo> {
  const log = options.logger ?? createLogger('io');
  const choice = options.backend ?? 'auto';
  const native = options.native ?? loadNative();
  // The addon, when it loaded, serves fs too: aligned buffers, and its lseek and extentMap
  // (no io_uring in them) tell holes, so an image or a digest skips them there as well; but
  // only on file systems known to count dirty page-cache data as data (see holesTrusted).
  const fsBlockIo = async (): Promise<{ io: FsBlockIo; holes: string }> => {
    if (!('addon' in native)) return { io: new FsBlockIo(), holes: 'not told (no addon)' };
    const allocAligned = (n: number): Buffer => native.addon.allocAligned(n, 4096);
    if (await (options.holesTrusted ?? holesTrusted)(options.probeDir)) return { io: new FsBlockIo({ allocAligned, extents: native.addon }), holes: 'told (addon)' };
    return { io: new FsBlockIo({ allocAligned }), holes: 'not told (a file system not known to count dirty data)' };
  };
  if (choice === 'fs') {
    const { io, holes } = await fsBlockIo();
    log.info('I/O backend: fs (configured)', { backend: 'fs', holes });
    return io;
  }
  let reason: string;
  if ('addon' in native) {
    let io: UringBlockIo | undefined;
    try {
      io = new UringBlockIo(native.addon, options.ringEntries ?? defaultRingEntries, options.durableWrites);
      await probe(io, options.probeDir);
      log.info('I/O backend: uring (io_uring, O_DIRECT)', { backend: 'uring', requested: choice, durableWrites: io.durableWrites });
      return io;
    } catch (err) {
      if (io) await io.close().catch(() => undefined);
      reason = err instanceof RaftblockError || err instanceof Error ? err.message : String(err);
    }
  } else {
    reason = native.error;
  }
  if (choice === 'uring') throw new RaftblockError('IO_BACKEND_UNAVAILABLE', `io_uring backend unavailable: ${reason}`);
  const { io, holes } = await fsBlockIo();
  log.warn('I/O backend: fs (io_uring unavailable)', { backend: 'fs', reason, holes });
  return io;
}

/** One aligned O_DIRECT write with RWF_DSYNC and a read back, in the data directory. */
async function probe(io: BlockIo, dir: string): Promise<void> {
  const path = join(dir, `.raftblock-io-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  const buf = io.allocAligned(8192);
  const out = buf.subarray(0, 4096);
  const back = buf.subarray(4096, 8192);
  randomBytes(4096).copy(out);
  try {
    const f = await io.open(path, { create: true });
    try {
      await f.pwrite(out, 0, true);
      const n = await f.pread(back, 0);
      if (n !== 4096 || !back.equals(out)) throw new Error('O_DIRECT read back differs from what was written');
    } finally {
      await f.close();
    }
  } finally {
    await rm(path, { force: true });
  }
}
