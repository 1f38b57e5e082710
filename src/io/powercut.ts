/**
 * Test-only BlockIo that can simulate a power cut. It wraps a real BlockIo and keeps, for every
 * write that is not yet durable, enough to undo it:
 *  - a DSYNC write is held in memory and reaches the real file only after a random delay,
 *    when it completes; at the cut, a random subset of its 4 KiB blocks lands (a torn write)
 *    and the rest is lost;
 *  - a plain write goes to the real file at once but remembers the bytes it replaced; at the
 *    cut, a random subset of its blocks is rolled back unless an fdatasync completed since.
 * After the cut every operation fails with EIO and nothing pending ever completes, as if the
 * process had died with the machine. Recovery then runs on the real files.
 */
import { IoError } from '../common/errors.js';
import type { BlockFile, BlockIo, OpenFileOptions } from './types.js';

const blockBytes = 4096;
const EIO = 5;

interface HeldWrite {
  data: Buffer; // a copy: the caller may reuse its buffer once the promise settles
  offset: number;
  started: boolean;
}

interface Undo {
  offset: number;
  old: Buffer;
}

/** A seeded generator (mulberry32) so a failing round can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class PowerCutIo implements BlockIo {
  readonly kind;
  readonly alignmentBytes;
  dead = false;
  private readonly files = new Set<PowerCutFile>();

  constructor(readonly inner: BlockIo, readonly random: () => number, readonly maxDelayMs = 2) {
    this.kind = inner.kind;
    this.alignmentBytes = inner.alignmentBytes;
  }

  async open(path: string, options?: OpenFileOptions): Promise<BlockFile> {
    if (this.dead) throw new IoError('open', EIO, 'power is off');
    const f = new PowerCutFile(this, await this.inner.open(path, options), path);
    this.files.add(f);
    return f;
  }

  allocAligned(lengthBytes: number): Buffer {
    return this.inner.allocAligned(lengthBytes);
  }

  /** Cuts the power: tears held writes, rolls back unsynced ones, fails everything after. */
  async powerCut(): Promise<{ tornWrites: number; rolledBackWrites: number }> {
    this.dead = true;
    let tornWrites = 0;
    let rolledBackWrites = 0;
    for (const f of this.files) {
      const r = await f.cut();
      tornWrites += r.torn;
      rolledBackWrites += r.rolledBack;
      await f.inner.close().catch(() => undefined);
    }
    this.files.clear();
    return { tornWrites, rolledBackWrites };
  }

  async close(): Promise<void> {
    for (const f of this.files) await f.inner.close().catch(() => undefined);
    this.files.clear();
  }

  forget(f: PowerCutFile): void {
    this.files.delete(f);
  }
}

class PowerCutFile implements BlockFile {
  readonly direct: boolean;
  private readonly held = new Set<HeldWrite>();
  private undo: Undo[] = [];

  constructor(private readonly io: PowerCutIo, readonly inner: BlockFile, readonly path: string) {
    this.direct = inner.direct;
  }

  private check(syscall: string): void {
    if (this.io.dead) throw new IoError(syscall, EIO, 'power is off');
  }

  async pread(buf: Buffer, offsetBytes: number): Promise<number> {
    this.check('pread');
    return this.inner.pread(buf, offsetBytes);
  }

  async pwrite(buf: Buffer, offsetBytes: number, dsync = false): Promise<void> {
    this.check('pwrite');
    if (!dsync) {
      await this.remember(offsetBytes, buf.length);
      this.check('pwrite');
      return this.inner.pwrite(buf, offsetBytes);
    }
    const w: HeldWrite = { data: Buffer.from(buf), offset: offsetBytes, started: false };
    this.held.add(w);
    await new Promise((r) => setTimeout(r, this.io.random() * this.io.maxDelayMs));
    this.check('pwrite');
    w.started = true;
    const aligned = this.io.allocAligned(w.data.length);
    w.data.copy(aligned);
    await this.inner.pwrite(aligned, offsetBytes, true);
    this.held.delete(w);
    this.check('pwrite');
  }

  async pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync = false): Promise<void> {
    return this.pwrite(Buffer.concat(bufs as Buffer[]), offsetBytes, dsync);
  }

  fdatasync(): Promise<void> {
    return this.sync('fdatasync', () => this.inner.fdatasync());
  }

  fsync(): Promise<void> {
    return this.sync('fsync', () => this.inner.fsync());
  }

  /** A sync makes durable the writes completed before it began: those need no undo any more. */
  private async sync(what: string, run: () => Promise<void>): Promise<void> {
    this.check(what);
    const covered = this.undo.length;
    await run();
    this.check(what);
    this.undo = this.undo.slice(covered);
  }

  async punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.check('fallocate');
    await this.remember(offsetBytes, lengthBytes);
    return this.inner.punchHole(offsetBytes, lengthBytes);
  }

  async zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.check('fallocate');
    await this.remember(offsetBytes, lengthBytes);
    return this.inner.zeroRange(offsetBytes, lengthBytes);
  }

  seekData(offsetBytes: number): Promise<number> {
    this.check('lseek');
    return this.inner.seekData(offsetBytes);
  }

  seekHole(offsetBytes: number): Promise<number> {
    this.check('lseek');
    return this.inner.seekHole(offsetBytes);
  }

  extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array> {
    this.check('lseek');
    return this.inner.extentMap(startBytes, endBytes, maxRuns);
  }

  size(): Promise<number> {
    this.check('fstat');
    return this.inner.size();
  }

  truncate(sizeBytes: number): Promise<void> {
    this.check('ftruncate');
    return this.inner.truncate(sizeBytes);
  }

  async close(): Promise<void> {
    this.check('close');
    this.io.forget(this);
    await this.inner.close();
  }

  /** Saves what a plain write is about to replace (zeros past the end of the file). */
  private async remember(offset: number, length: number): Promise<void> {
    const old = this.io.allocAligned(length);
    const n = await this.inner.pread(old, offset);
    old.fill(0, n);
    this.undo.push({ offset, old });
  }

  /** At the cut: land a random subset of each held write's blocks; roll back unsynced ones. */
  async cut(): Promise<{ torn: number; rolledBack: number }> {
    let torn = 0;
    const rnd = this.io.random;
    for (const w of this.held) {
      if (w.started) continue; // already handed to the disk: it lands whole
      torn++;
      for (let off = 0; off < w.data.length; off += blockBytes) {
        if (rnd() < 0.5) continue;
        const blk = this.io.allocAligned(blockBytes);
        w.data.copy(blk, 0, off, off + blockBytes);
        await this.inner.pwrite(blk, w.offset + off);
      }
    }
    this.held.clear();
    const rolledBack = this.undo.length;
    for (const u of this.undo.reverse()) {
      for (let off = 0; off < u.old.length; off += blockBytes) {
        if (rnd() < 0.5) continue;
        await this.inner.pwrite(u.old.subarray(off, off + blockBytes), u.offset + off);
      }
    }
    this.undo = [];
    await this.inner.fdatasync();
    return { torn, rolledBack };
  }
}
