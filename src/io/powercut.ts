/**
 * Test-only BlockIo that can simulate a power cut. It wraps a real BlockIo and keeps, for every
 * change to a file that is not yet durable, enough to undo it:
 *  - a DSYNC write is held in memory and reaches the real file only after a random delay,
 *    when it completes; at the cut, a random subset of its 4 KiB blocks lands (a torn write)
 *    and the rest is lost. Once it completes, nothing older is undone over its range;
 *  - a plain write goes to the real file at once but remembers the bytes it replaced; at the
 *    cut, a random subset of its blocks is rolled back unless an fdatasync completed since;
 *  - a truncate, punchHole or zeroRange (metadata: extents and the size, kept in the file
 *    system's journal) remembers what it cut off or zeroed; at the cut it is undone whole,
 *    unless synced since: the file gets its old size back, the bytes it cut off or zeroed come
 *    back, and the blocks it freed past the end of the file are allocated again (unwritten).
 *    The journal commits in order, so the undone ones are the newest few of a file (a seeded
 *    random count, all of them on a high draw): never an older one while a newer one stays.
 * Which sync makes a change durable follows types.ts: fdatasync makes writes, punches, zero
 * ranges and size changes durable (Linux writes the size with the data, since reads need it);
 * a truncate that kept the size changes no byte a read returns, only frees blocks past the end
 * of the file, and that only fsync makes durable (fdatasync may leave it in the journal),
 * or a newer metadata change made durable (the journal's order). A completed DSYNC write syncs
 * the metadata as fdatasync does (the truncates, punches and zero ranges completed before it
 * began are durable), but not the data other writes left without DSYNC.
 * What a metadata change would cut off is read from the allocated ranges only (holes are not
 * read) and kept only where not zero; a change that would need more than
 * `rememberScanLimitBytes` of allocated data read fails (a test on a file too big to model).
 * After the cut every operation fails with EIO and nothing pending ever completes, as if the
 * process had died with the machine. Recovery then runs on the real files.
 *
 * Limits, where the model is simpler than a disk: a file closed before the cut counts as
 * durable (its undo is dropped with it), and two handles on one path keep separate undos (both
 * gentler: a missing sync there goes unseen); an undone truncate or punch brings back the data
 * it cut, but allocated zeros (unwritten extents) inside its range come back as holes (the
 * same bytes, another allocation); on the fs backend a punch or zero range writes zeros, yet is
 * undone whole, as a journalled change (gentler than torn zeros).
 */
import { IoError } from '../common/errors.js';
import { extentRuns } from './extent-runs.js';
import { ExtentKind, type BlockFile, type BlockIo, type OpenFileOptions } from './types.js';

const blockBytes = 4096;
const EIO = 5;
/** Most allocated bytes one truncate, punch or zero range reads to remember (see the top). */
export const rememberScanLimitBytes = 256 * 1024 * 1024;
/** Bytes read at a time while remembering. */
const rememberChunkBytes = 1024 * 1024;
/** Where a look for blocks allocated past the end of a file stops (any file here ends before). */
const allocationProbeEndBytes = 2 ** 52;
/** Runs asked per extent map while remembering (a longer map is asked again from its end). */
const allocationProbeRuns = 1024;

interface HeldWrite {
  data: Buffer; // a copy: the caller may reuse its buffer once the promise settles
  offset: number;
  started: boolean;
}

/** Bytes at `offset` as they were before a change (aligned; only blocks that were not zero). */
interface Run {
  offset: number;
  data: Buffer;
}

/** A byte range [from, to). */
type Range = [from: number, to: number];

/**
 * An undo as a file keeps it: numbered in the order the changes completed, so that a sync
 * settles exactly those completed before it began, whatever another sync settled meanwhile.
 */
type Entry = Undo & { seq: number };

/** What a change not yet durable did, newest last in a file's list. */
type Undo =
  /** A plain write: the bytes it replaced (zeros past the end of the file), torn per block. */
  | { kind: 'write'; offset: number; old: Buffer }
  /**
   * A punchHole or zeroRange of `range`: the non-zero blocks it zeroed (below the file's end),
   * and the size it grew the file from (the fs backend writes zeros: past the end they extend it).
   */
  | { kind: 'zeroed'; range: Range; runs: Run[]; fromBytes: number; toBytes: number }
  /** A truncate that changed the size: the non-zero blocks it cut off, the blocks it freed past the old end. */
  | { kind: 'resize'; fromBytes: number; toBytes: number; runs: Run[]; freed: Range[] }
  /**
   * A truncate that kept the size: the blocks it freed past the end; only fsync makes it
   * durable, or a newer metadata change made durable (the journal's order).
   */
  | { kind: 'free'; freed: Range[] }
  /** A completed DSYNC write, or a punch or zero range made durable: older undos leave its range alone. */
  | { kind: 'durable'; range: Range }
  /** A truncate made durable while older writes are not: older undos write nothing at or past its end. */
  | { kind: 'kept'; endBytes: number };

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

  /**
   * Cuts the power: tears held writes, rolls back unsynced ones, undoes the newest unsynced
   * metadata changes, fails everything after.
   */
  async powerCut(): Promise<{ tornWrites: number; rolledBackWrites: number; undoneMetadataChanges: number }> {
    this.dead = true;
    let tornWrites = 0;
    let rolledBackWrites = 0;
    let undoneMetadataChanges = 0;
    for (const f of this.files) {
      const r = await f.cut();
      tornWrites += r.torn;
      rolledBackWrites += r.rolledBack;
      undoneMetadataChanges += r.undoneMetadata;
      await f.inner.close().catch(() => undefined);
    }
    this.files.clear();
    return { tornWrites, rolledBackWrites, undoneMetadataChanges };
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
  private undo: Entry[] = [];
  /** The number the next completed change gets (Entry.seq). */
  private nextSeq = 0;

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
      const old = await this.readOld(offsetBytes, buf.length);
      this.check('pwrite');
      await this.inner.pwrite(buf, offsetBytes);
      this.record({ kind: 'write', offset: offsetBytes, old });
      return;
    }
    const w: HeldWrite = { data: Buffer.from(buf), offset: offsetBytes, started: false };
    // What it makes durable besides its own bytes: the changes completed before it began.
    const before = this.nextSeq;
    this.held.add(w);
    await new Promise((r) => setTimeout(r, this.io.random() * this.io.maxDelayMs));
    this.check('pwrite');
    w.started = true;
    const aligned = this.io.allocAligned(w.data.length);
    w.data.copy(aligned);
    await this.inner.pwrite(aligned, offsetBytes, true);
    this.held.delete(w);
    this.check('pwrite');
    // A DSYNC write syncs the file's metadata as fdatasync does (the older truncates, punches
    // and zero ranges are durable now), not the other data written without DSYNC.
    this.settle(before, { keepWrites: true });
    // Nothing older is undone over it; with nothing older to undo, there is nothing to guard.
    if (this.undo.length > 0) this.record({ kind: 'durable', range: [offsetBytes, offsetBytes + w.data.length] });
  }

  async pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync = false): Promise<void> {
    return this.pwrite(Buffer.concat(bufs as Buffer[]), offsetBytes, dsync);
  }

  fdatasync(): Promise<void> {
    return this.sync('fdatasync', () => this.inner.fdatasync(), { keepWrites: false });
  }

  fsync(): Promise<void> {
    return this.sync('fsync', () => this.inner.fsync(), { keepWrites: false, keepFree: false });
  }

  /** A sync makes durable the changes completed before it began (settle says which). */
  private async sync(what: string, run: () => Promise<void>, how: { keepWrites: boolean; keepFree?: boolean }): Promise<void> {
    this.check(what);
    const covered = this.nextSeq;
    await run();
    this.check(what);
    this.settle(covered, how);
  }

  /** Keeps the undo of a change that just completed, numbered after every earlier one. */
  private record(u: Undo): void {
    this.undo.push({ ...u, seq: this.nextSeq++ });
  }

  /**
   * Settles the undos numbered below `upTo` (the changes completed before a sync began) as that sync
   * makes them durable: its truncates that changed the size, punches and zero ranges always;
   * a truncate that kept the size only with `keepFree` false (fsync), or once a newer metadata
   * change is durable (the journal commits in order); plain writes only with `keepWrites` false
   * (fdatasync, fsync; not a DSYNC write). Where older writes stay undoable, a durable change
   * leaves a guard so that their undo does not write over it: a kept end for a truncate, a
   * range for a punch or zero range.
   */
  private settle(upTo: number, how: { keepWrites: boolean; keepFree?: boolean }): void {
    // The list is in completion order: those settled are a prefix of it.
    const end = this.undo.findIndex((u) => u.seq >= upTo);
    const covered = end === -1 ? this.undo.length : end;
    const before = this.undo.slice(0, covered);
    let lastMetadata = -1;
    before.forEach((u, i) => {
      if (u.kind === 'resize' || u.kind === 'zeroed') lastMetadata = i;
    });
    const left: Entry[] = [];
    before.forEach((u, i) => {
      switch (u.kind) {
        case 'free':
          if ((how.keepFree ?? true) && i > lastMetadata) left.push(u);
          break;
        case 'resize':
          if (how.keepWrites) left.push({ kind: 'kept', endBytes: u.toBytes, seq: u.seq });
          break;
        case 'zeroed':
          if (how.keepWrites) left.push({ kind: 'durable', range: u.range, seq: u.seq });
          break;
        default: // write, durable, kept: their guards matter only while older writes stay
          if (how.keepWrites) left.push(u);
      }
    });
    this.undo = [...left, ...this.undo.slice(covered)];
  }

  punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.zeroing(offsetBytes, lengthBytes, () => this.inner.punchHole(offsetBytes, lengthBytes));
  }

  zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.zeroing(offsetBytes, lengthBytes, () => this.inner.zeroRange(offsetBytes, lengthBytes));
  }

  /** Runs a punch or zero range of [offset, offset + length), remembering what it zeroes. */
  private async zeroing(offset: number, length: number, run: () => Promise<void>): Promise<void> {
    this.check('fallocate');
    const fromBytes = await this.inner.size();
    const runs = offset < fromBytes ? await this.dataRuns(offset, Math.min(offset + length, fromBytes)) : [];
    this.check('fallocate');
    await run();
    this.record({ kind: 'zeroed', range: [offset, offset + length], runs, fromBytes, toBytes: await this.inner.size() });
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

  async truncate(sizeBytes: number): Promise<void> {
    this.check('ftruncate');
    const fromBytes = await this.inner.size();
    // A shrink cuts off [size, old size) and, as a truncate at the size does, frees the blocks
    // allocated past the end; an extension frees nothing (ext4 frees only at or below the size).
    const runs = sizeBytes < fromBytes ? await this.dataRuns(sizeBytes, fromBytes) : [];
    const freed = sizeBytes <= fromBytes ? await this.allocatedPast(fromBytes) : [];
    this.check('ftruncate');
    await this.inner.truncate(sizeBytes);
    if (sizeBytes !== fromBytes) this.record({ kind: 'resize', fromBytes, toBytes: sizeBytes, runs, freed });
    else if (freed.length > 0) this.record({ kind: 'free', freed });
  }

  async close(): Promise<void> {
    this.check('close');
    this.io.forget(this);
    await this.inner.close();
  }

  /** What a plain write is about to replace (zeros past the end of the file). */
  private async readOld(offset: number, length: number): Promise<Buffer> {
    const old = this.io.allocAligned(length);
    const n = await this.inner.pread(old, offset);
    old.fill(0, n);
    return old;
  }

  /**
   * The non-zero blocks of [from, to) (below the file's end), read from its data extents
   * only: a hole or an unwritten extent reads as zeros. Fails past rememberScanLimitBytes.
   */
  private async dataRuns(from: number, to: number): Promise<Run[]> {
    const runs: Run[] = [];
    let scannedBytes = 0;
    const chunk = this.io.allocAligned(rememberChunkBytes);
    for (const [dataFrom, dataTo] of await this.extents(from, to, (kind) => kind === ExtentKind.Data)) {
      scannedBytes += dataTo - dataFrom;
      if (scannedBytes > rememberScanLimitBytes) {
        throw new Error(`PowerCutIo: ${this.path}: more than ${rememberScanLimitBytes} bytes of data in [${from}, ${to}) to remember; use a smaller file`);
      }
      for (let at = dataFrom; at < dataTo; at += rememberChunkBytes) {
        const part = chunk.subarray(0, Math.min(rememberChunkBytes, dataTo - at));
        const n = await this.inner.pread(part, at);
        part.fill(0, n);
        for (let b = 0; b < part.length; b += blockBytes) {
          const block = part.subarray(b, b + blockBytes);
          if (block.every((x) => x === 0)) continue;
          const last = runs[runs.length - 1];
          if (last && last.offset + last.data.length === at + b) {
            const longer = this.io.allocAligned(last.data.length + blockBytes);
            last.data.copy(longer);
            block.copy(longer, last.data.length);
            last.data = longer;
          } else {
            const data = this.io.allocAligned(blockBytes);
            block.copy(data);
            runs.push({ offset: at + b, data });
          }
        }
      }
    }
    return runs;
  }

  /** The ranges allocated (as unwritten extents: past the end nothing else is) at or past `from`. */
  private allocatedPast(from: number): Promise<Range[]> {
    return this.extents(from, allocationProbeEndBytes, (kind) => kind !== ExtentKind.Hole);
  }

  /** The runs of [from, to) whose kind `wanted` picks, widened to whole blocks. */
  private async extents(from: number, to: number, wanted: (kind: ExtentKind) => boolean): Promise<Range[]> {
    const out: Range[] = [];
    for await (const run of extentRuns(this.inner, from, to, allocationProbeRuns)) {
      if (!wanted(run.kind)) continue;
      const a = Math.max(from, Math.floor(run.start / blockBytes) * blockBytes);
      const b = Math.min(to, Math.ceil(run.end / blockBytes) * blockBytes);
      if (a < b) out.push([a, b]);
    }
    return out;
  }

  /**
   * At the cut: land a random subset of each held write's blocks; undo the newest few
   * metadata changes whole (a journal commits in order) and roll back a random subset of each
   * unsynced write's blocks, newest first, never over a completed DSYNC write or a newer
   * punch or zero range that is durable or stays, nor past the end a newer truncate that is
   * durable or stays left (those bytes are gone for good).
   */
  async cut(): Promise<{ torn: number; rolledBack: number; undoneMetadata: number }> {
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
    const metadata = this.undo.filter((u) => u.kind === 'resize' || u.kind === 'free' || u.kind === 'zeroed').length;
    // A high draw undoes more, as a high draw rolls back more of a write.
    let toUndo = Math.min(metadata, Math.floor(rnd() * (metadata + 1)));
    const undoneMetadata = toUndo;
    let rolledBack = 0;
    const durable: Range[] = [];
    let keptEndBytes = Number.POSITIVE_INFINITY;
    /** Writes `run`'s blocks back but those under a durable write or past a kept end; `keep` picks blocks (torn rollback). */
    const restore = async (run: Run, keep: () => boolean): Promise<void> => {
      for (let off = 0; off < run.data.length; off += blockBytes) {
        if (!keep()) continue;
        const at = run.offset + off;
        if (at >= keptEndBytes || durable.some(([a, b]) => at < b && at + blockBytes > a)) continue;
        await this.inner.pwrite(run.data.subarray(off, off + blockBytes), at);
      }
    };
    for (const u of this.undo.reverse()) {
      switch (u.kind) {
        case 'durable':
          durable.push(u.range);
          break;
        case 'kept':
          keptEndBytes = Math.min(keptEndBytes, u.endBytes);
          break;
        case 'write':
          rolledBack++;
          await restore({ offset: u.offset, data: u.old }, () => rnd() >= 0.5);
          break;
        case 'zeroed':
          if (toUndo === 0) {
            // It stays: older undos do not bring back what it zeroed.
            durable.push(u.range);
            break;
          }
          toUndo--;
          for (const run of u.runs) await restore(run, () => true);
          if (u.toBytes > u.fromBytes && (await this.inner.size()) === u.toBytes) await this.inner.truncate(this.sizeUnder(u.fromBytes, u.toBytes, durable));
          break;
        case 'resize': {
          if (toUndo === 0) {
            // It stays: what it cut off is gone, whatever older change is undone.
            keptEndBytes = Math.min(keptEndBytes, u.toBytes);
            break;
          }
          toUndo--;
          const now = await this.inner.size();
          if (u.toBytes < u.fromBytes) {
            if (now < u.fromBytes) await this.inner.truncate(u.fromBytes);
            for (const run of u.runs) await restore(run, () => true);
          } else if (now === u.toBytes) {
            await this.inner.truncate(this.sizeUnder(u.fromBytes, u.toBytes, durable));
          }
          await this.reallocate(u.freed);
          break;
        }
        case 'free':
          if (toUndo === 0) break;
          toUndo--;
          await this.reallocate(u.freed);
          break;
      }
    }
    this.undo = [];
    await this.inner.fdatasync();
    return { torn, rolledBack, undoneMetadata };
  }

  /** The size an extension from `fromBytes` to `toBytes` is undone to: the old one, but not under a durable write past it. */
  private sizeUnder(fromBytes: number, toBytes: number, durable: Range[]): number {
    let back = fromBytes;
    for (const [, b] of durable) if (b > back) back = Math.min(b, toBytes);
    return back;
  }

  /** Allocates again (unwritten, the size kept) what a truncate freed past the file's end, as far as it is still past it. */
  private async reallocate(freed: Range[]): Promise<void> {
    if (freed.length === 0) return;
    const end = await this.inner.size();
    for (const [a, b] of freed) {
      const from = Math.max(a, Math.ceil(end / blockBytes) * blockBytes);
      // Only a backend that reported them can allocate them (uring's ZERO_RANGE keeps the size).
      if (from < b) await this.inner.zeroRange(from, b - from);
    }
  }
}
