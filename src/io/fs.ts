/**
 * The portable BlockIo: plain `fs` (libuv thread pool), buffered pwrite + fdatasync.
 * Used where io_uring or O_DIRECT is unavailable (no addon, seccomp, tmpfs, old kernel) or
 * when configured. It enforces the same alignment contract as the uring backend.
 * Given the addon's extent calls (it loaded, io_uring aside), it tells holes and unwritten
 * extents as the uring backend does; without them everything below the end of a file is data,
 * and an image, a digest or a rebuild of a sparse volume reads and carries its holes as zeros.
 */
import * as fs from 'node:fs';
import { IoError } from '../common/errors.js';
import { checkAligned, closedFileError, toIoError } from './check.js';
import { fdClose, fdSize, fdTruncate } from './fd.js';
import { type ExtentAddon, ExtentQueries, seekThroughAddon } from './native.js';
import { writeZeros } from './zeros.js';
import { type BlockFile, type BlockIo, ExtentKind, type OpenFileOptions, ioAlignmentBytes } from './types.js';

const zeroChunkBytes = 1 << 20;
/** The zeros zeroRange writes from, made at its first call and shared (nothing writes into it). */
let fsZeros: Buffer | undefined;

class FsFile implements BlockFile {
  readonly direct = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** This file's extent queries through the addon; null without it (no holes told). */
  private readonly extents: ExtentQueries | null;
  constructor(readonly path: string, private readonly fd: number, private readonly addon: ExtentAddon | undefined) {
    this.extents = addon ? new ExtentQueries(addon, fd, path) : null;
  }

  pread(buf: Buffer, offsetBytes: number): Promise<number> {
    if (this.closed) return Promise.reject(closedFileError('pread', this.path));
    checkAligned('pread', offsetBytes, buf.length);
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, 0, buf.length, offsetBytes, (err, n) => (err ? reject(toIoError(err, 'pread', this.path)) : resolve(n)));
    });
  }

  pwrite(buf: Buffer, offsetBytes: number, dsync = false): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('pwrite', this.path));
    checkAligned('pwrite', offsetBytes, buf.length);
    return new Promise<void>((resolve, reject) => {
      fs.write(this.fd, buf, 0, buf.length, offsetBytes, (err, n) => {
        if (err) return reject(toIoError(err, 'pwrite', this.path));
        if (n !== buf.length) return reject(new IoError('pwrite', 28 /* ENOSPC */, `short write ${n}/${buf.length} on ${this.path}`));
        resolve();
      });
    }).then(() => (dsync ? this.fdatasync() : undefined));
  }

  pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync = false): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('pwritev', this.path));
    let total = 0;
    for (const b of bufs) total += b.length;
    checkAligned('pwritev', offsetBytes, total);
    return new Promise<void>((resolve, reject) => {
      fs.writev(this.fd, bufs as Buffer[], offsetBytes, (err, n) => {
        if (err) return reject(toIoError(err, 'pwritev', this.path));
        if (n !== total) return reject(new IoError('pwritev', 28, `short write ${n}/${total} on ${this.path}`));
        resolve();
      });
    }).then(() => (dsync ? this.fdatasync() : undefined));
  }

  fdatasync(): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('fdatasync', this.path));
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (err) => (err ? reject(toIoError(err, 'fdatasync', this.path)) : resolve()));
    });
  }

  fsync(): Promise<void> {
    if (this.closed) return Promise.reject(closedFileError('fsync', this.path));
    return new Promise((resolve, reject) => {
      fs.fsync(this.fd, (err) => (err ? reject(toIoError(err, 'fsync', this.path)) : resolve()));
    });
  }

  async punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    // No fallocate in Node's fs: zeros read back the same, the space just stays allocated.
    await this.zeroRange(offsetBytes, lengthBytes);
  }

  async zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.closed) throw closedFileError('pwrite', this.path);
    checkAligned('zeroRange', offsetBytes, lengthBytes);
    fsZeros ??= Buffer.alloc(zeroChunkBytes);
    await writeZeros(this, fsZeros, offsetBytes, offsetBytes + lengthBytes);
  }

  async seekData(offsetBytes: number): Promise<number> {
    if (this.addon) {
      if (this.closed) throw closedFileError('lseek', this.path);
      return seekThroughAddon(this.addon, this.fd, this.path, offsetBytes, 'data');
    }
    return offsetBytes < (await this.size()) ? offsetBytes : -1;
  }

  async seekHole(offsetBytes: number): Promise<number> {
    if (this.addon) {
      if (this.closed) throw closedFileError('lseek', this.path);
      return seekThroughAddon(this.addon, this.fd, this.path, offsetBytes, 'hole');
    }
    const size = await this.size();
    return offsetBytes < size ? size : -1;
  }

  async extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array> {
    if (this.closed) throw closedFileError('lseek', this.path);
    if (this.extents) return this.extents.map(startBytes, endBytes, maxRuns);
    // Without the addon holes are not told from data (seekData), nor unwritten extents: data
    // up to the end of the file, a hole past it.
    const size = await this.size();
    const runs: number[] = [];
    if (startBytes < Math.min(size, endBytes)) runs.push(startBytes, Math.min(size, endBytes), ExtentKind.Data);
    if (endBytes > Math.max(size, startBytes) && runs.length / 3 < maxRuns) runs.push(Math.max(size, startBytes), endBytes, ExtentKind.Hole);
    return Float64Array.from(runs);
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
    // An extent query's pool thread uses the descriptor number until it ends: closed before,
    // the number could name another file by then.
    await this.extents?.drained();
    await fdClose(this.fd, this.path);
  }
}

export interface FsBlockIoOptions {
  /** Aligned allocator (the addon's, when it loaded); else plain zeroed Buffers. */
  allocAligned?: (lengthBytes: number) => Buffer;
  /**
   * The addon's lseek and extentMap (when it loaded): seekData, seekHole and extentMap tell
   * holes and unwritten extents through them. Without them everything below the end of a
   * file is data.
   */
  extents?: ExtentAddon;
}

export class FsBlockIo implements BlockIo {
  readonly kind = 'fs' as const;
  readonly alignmentBytes = ioAlignmentBytes;
  private readonly alloc: (lengthBytes: number) => Buffer;
  private readonly extentAddon: ExtentAddon | undefined;

  constructor(options: FsBlockIoOptions = {}) {
    this.alloc = options.allocAligned ?? ((n) => Buffer.alloc(n));
    this.extentAddon = options.extents;
  }

  open(path: string, options: OpenFileOptions = {}): Promise<BlockFile> {
    const flags = (options.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) | (options.create ? fs.constants.O_CREAT : 0);
    return new Promise((resolve, reject) => {
      fs.open(path, flags, 0o644, (err, fd) => (err ? reject(toIoError(err, 'open', path)) : resolve(new FsFile(path, fd, this.extentAddon))));
    });
  }

  allocAligned(lengthBytes: number): Buffer {
    checkAligned('allocAligned', 0, lengthBytes);
    return this.alloc(lengthBytes);
  }

  async close(): Promise<void> {}
}
