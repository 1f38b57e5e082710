/**
 * A volume's data on one PG replica, addressed by volume offset, kept in files of at most
 * `dataFileSpanBytes` each: `vol-ID.dat` holds [0, span), `vol-ID.sK.dat` holds [K·span,
 * (K+1)·span). One file per volume failed past the file system's largest file (16 TiB on ext4
 * with 4 KiB blocks: EFBIG): the write-behind's error stopped every replica of the PG, and again
 * at every restart that replayed the write. Volumes go to 1 PiB (maxVolumeBytes).
 *
 * The span is a multiple of every extent size (a power of two up to 1 GiB), so no extent, and
 * so no store command, straddles two files; the methods still split at the boundary rather
 * than rely on it. It is 16 TiB − 1 GiB rather than a power of two so that a `vol-ID.dat`
 * written before the split holds what its first span now means (ext4 refused every byte at or
 * past 16 TiB − 4 KiB); one that holds bytes past the span (ext4's last GiB; anything past it
 * on a file system with larger files) has them moved to the later files at open.
 *
 * Segment files other than the first are made by the first write (or zero range) that needs
 * them; a missing one reads as zeros and a hole.
 */
import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { IoError } from '../common/errors.js';
import { assert } from '../common/assert.js';
import { extentRuns } from '../io/extent-runs.js';
import { ExtentKind, ioAlignmentBytes as alignmentBytes, type BlockFile, type BlockIo } from '../io/types.js';

/** Bytes of a volume one data file holds: 16 TiB − 1 GiB (see the top). */
export const dataFileSpanBytes = 2 ** 44 - 2 ** 30;
/** Runs asked of a file's extent map to learn whether anything is allocated past a point. */
const allocationProbeRuns = 16;
/** Bytes copied at a time when an old first file is split (splitLongFirstFile). */
const splitCopyBytes = 1024 * 1024;

/** `vol-ID.dat` or `vol-ID.sK.dat` (K ≥ 1), numbers without leading zeros: one name a file. */
const fileNamePattern = /^vol-(0|[1-9]\d*)(?:\.s([1-9]\d*))?\.dat$/;

/** The name of segment `k` of volume `volumeId`'s data. */
export function volumeFileName(volumeId: number, k: number): string {
  return k === 0 ? `vol-${volumeId}.dat` : `vol-${volumeId}.s${k}.dat`;
}

/** The volume a data file name belongs to (any segment), or undefined for another file. */
export function volumeOfFileName(name: string): number | undefined {
  const m = fileNamePattern.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The volumes that have data files in `dir`, ascending. */
export async function volumesIn(dir: string): Promise<number[]> {
  const ids = new Set<number>();
  for (const name of await readdir(dir)) {
    const id = volumeOfFileName(name);
    if (id !== undefined) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}

/** Removes every data file of `volumeId` in `dir`; returns whether there was one. */
export async function unlinkVolumeFiles(dir: string, volumeId: number): Promise<boolean> {
  let any = false;
  for (const name of await readdir(dir)) {
    if (volumeOfFileName(name) !== volumeId) continue;
    try {
      await unlink(join(dir, name));
      any = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new IoError('unlink', (err as NodeJS.ErrnoException).errno ?? 5, `unlink of ${name} in ${dir} failed: ${(err as Error).message}`);
    }
  }
  return any;
}

/**
 * Whether the data files in `dir` may hold a byte of some volume, data or zeros kept
 * allocated, at or past volume offset `offsetBytes`. Judged from the files' names and stat
 * (cheap: one stat per file that could reach that far), never their extent maps, so the answer
 * may be yes where nothing is left, never no where something is: a file's size is past every
 * byte ever written to it and a trim does not shrink it; a NO_HOLE zero past a file's end
 * keeps its size but allocates blocks, so a later file with any block allocated counts whole,
 * even the one whose span starts just below the offset and whose blocks may all lie there. A
 * file a shrink's discard emptied (size 0, nothing allocated) does not count. Blocks not
 * written to the files yet (write-behind) are not seen.
 */
export async function filesMayReach(dir: string, offsetBytes: number): Promise<boolean> {
  for (const name of await readdir(dir)) {
    const m = fileNamePattern.exec(name);
    if (!m) continue;
    const k = m[2] === undefined ? 0 : Number(m[2]);
    const start = k * dataFileSpanBytes;
    // A first file of an earlier version may run past its span (see splitLongFirstFile): its
    // size, not its span, says how far it reaches.
    if (k > 0 && start + dataFileSpanBytes <= offsetBytes) continue;
    let st: { size: number; blocks: number };
    try {
      st = await stat(join(dir, name));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') continue; // removed since it was listed (a volume dropped)
      throw new IoError('stat', e.errno ?? 5, `stat of ${name} in ${dir} failed: ${e.message}`);
    }
    // Its bytes are [start, start + size): an empty file (a span a discard cut to nothing) holds none.
    if ((st.size > 0 && start + st.size > offsetBytes) || (k > 0 && st.blocks > 0)) return true;
  }
  return false;
}

/** One piece of a range inside segment `k`: [local, local + length) of that file, `at` bytes into the range. */
interface Piece {
  k: number;
  local: number;
  length: number;
  at: number;
}

function piecesOf(offsetBytes: number, lengthBytes: number): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  while (at < lengthBytes) {
    const pos = offsetBytes + at;
    const k = Math.floor(pos / dataFileSpanBytes);
    const local = pos - k * dataFileSpanBytes;
    const length = Math.min(lengthBytes - at, dataFileSpanBytes - local);
    out.push({ k, local, length, at });
    at += length;
  }
  return out;
}

/** Whether a segment file has anything but holes at or past `local` (up to its span's end). */
async function allocatedFrom(s: BlockFile, local: number): Promise<boolean> {
  if (local >= dataFileSpanBytes) return false;
  const runs = await s.extentMap(local, dataFileSpanBytes, allocationProbeRuns);
  for (let i = 0; i + 2 < runs.length; i += 3) if (runs[i + 2] !== ExtentKind.Hole) return true;
  // Only holes, ending short of the span (as many runs as asked for): what follows is unknown.
  return runs.length > 0 && runs[runs.length - 2] < dataFileSpanBytes;
}

export class SpannedFile implements BlockFile {
  readonly path: string;
  readonly direct: boolean;
  private readonly segments = new Map<number, BlockFile>();
  /** Segment files being made (two writes to one new segment open it once). */
  private readonly opening = new Map<number, Promise<BlockFile>>();
  private closed = false;

  private constructor(
    private readonly io: BlockIo,
    private readonly dir: string,
    private readonly volumeId: number,
    first: BlockFile,
  ) {
    this.path = first.path;
    this.direct = first.direct;
    this.segments.set(0, first);
  }

  /**
   * Opens the volume's data files. Its first file is made when `create`; without it a missing
   * one fails as the open does (IoError, errno 2), whatever other segments exist (the first is
   * always made before them).
   */
  static async open(io: BlockIo, dir: string, volumeId: number, create: boolean): Promise<SpannedFile> {
    const first = await io.open(join(dir, volumeFileName(volumeId, 0)), { create });
    const f = new SpannedFile(io, dir, volumeId, first);
    try {
      for (const name of await readdir(dir)) {
        const m = fileNamePattern.exec(name);
        if (!m || Number(m[1]) !== volumeId || m[2] === undefined) continue;
        try {
          f.segments.set(Number(m[2]), await io.open(join(dir, name)));
        } catch (err) {
          // Removed since it was listed (the volume dropped meanwhile): a span never written.
          if (!(err instanceof IoError && err.errno === 2)) throw err;
        }
      }
      await f.splitLongFirstFile();
    } catch (err) {
      await f.close();
      throw err;
    }
    return f;
  }

  /**
   * A first file written before the split (on a file system that allows files past 16 TiB,
   * XFS say) may hold bytes past the first span, which are now read from the later files: they
   * are copied there, made durable, and only then cut from the first file. A crash in between
   * leaves the first file long, and the next open copies them again (the same bytes).
   */
  private async splitLongFirstFile(): Promise<void> {
    const first = this.segments.get(0)!;
    const size = await first.size();
    if (size <= dataFileSpanBytes) return;
    const buf = this.io.allocAligned(splitCopyBytes);
    for await (const run of extentRuns(first, dataFileSpanBytes, size, 256)) {
      if (run.kind !== ExtentKind.Data) continue;
      for (let at = run.start; at < run.end; at += splitCopyBytes) {
        // Whole aligned blocks (O_DIRECT): past the end of the file, a short read's zeros.
        const len = Math.ceil(Math.min(splitCopyBytes, run.end - at) / alignmentBytes) * alignmentBytes;
        const part = buf.subarray(0, len);
        const n = await first.pread(part, at);
        part.fill(0, n);
        await this.pwrite(part, at);
      }
    }
    for (const [k, s] of this.segments) if (k > 0) await s.fdatasync();
    await first.truncate(dataFileSpanBytes);
    await first.fdatasync();
  }

  /** The end of the last span that has a file: past it the volume holds nothing here. */
  extentEnd(): number {
    return (this.lastSegment() + 1) * dataFileSpanBytes;
  }

  private async segment(k: number, create: boolean): Promise<BlockFile | undefined> {
    this.assertOpen();
    const open = this.segments.get(k);
    if (open || !create) return open;
    let made = this.opening.get(k);
    if (!made) {
      made = this.io.open(join(this.dir, volumeFileName(this.volumeId, k)), { create: true });
      this.opening.set(k, made);
      void made.then(
        (s) => {
          this.opening.delete(k);
          // Closed while it opened: close it too, or its descriptor stays open for good.
          if (this.closed) s.close().catch(() => undefined);
          else this.segments.set(k, s);
        },
        () => this.opening.delete(k),
      );
    }
    const s = await made;
    this.assertOpen();
    return s;
  }

  private assertOpen(): void {
    if (this.closed) throw new IoError('open', 9, `${this.path}: data files closed`);
  }

  /** The one file a range lies in, or undefined when it crosses a boundary (the rare case). */
  private static within(offsetBytes: number, lengthBytes: number): number | undefined {
    const k = Math.floor(offsetBytes / dataFileSpanBytes);
    return lengthBytes > 0 && Math.floor((offsetBytes + lengthBytes - 1) / dataFileSpanBytes) === k ? k : undefined;
  }

  async pread(buf: Buffer, offsetBytes: number): Promise<number> {
    // Every I/O of the write-behind and of a read: within one file, no pieces to make.
    const k = SpannedFile.within(offsetBytes, buf.length);
    if (k !== undefined && !this.holdsPast(k)) {
      const s = await this.segment(k, false);
      const n = s ? await s.pread(buf, offsetBytes - k * dataFileSpanBytes) : 0;
      return n;
    }
    let read = 0;
    for (const p of piecesOf(offsetBytes, buf.length)) {
      const s = await this.segment(p.k, false);
      const part = buf.subarray(p.at, p.at + p.length);
      // A segment never made reads as zeros: the range was never written.
      const n = s ? await s.pread(part, p.local) : 0;
      if (n < p.length) {
        part.fill(0, n);
        // Short only at the end of the last file: later bytes are in a hole of this volume.
        if (!this.holdsPast(p.k)) return read + n;
      }
      read += p.length;
    }
    return read;
  }

  /** Whether a segment after `k` exists (bytes past segment k's end may then be data). */
  private holdsPast(k: number): boolean {
    for (const j of this.segments.keys()) if (j > k) return true;
    return false;
  }

  async pwrite(buf: Buffer, offsetBytes: number, dsync?: boolean): Promise<void> {
    const k = SpannedFile.within(offsetBytes, buf.length);
    if (k !== undefined) return (await this.segment(k, true))!.pwrite(buf, offsetBytes - k * dataFileSpanBytes, dsync);
    for (const p of piecesOf(offsetBytes, buf.length)) {
      const s = (await this.segment(p.k, true))!;
      await s.pwrite(buf.subarray(p.at, p.at + p.length), p.local, dsync);
    }
  }

  async pwritev(bufs: readonly Buffer[], offsetBytes: number, dsync?: boolean): Promise<void> {
    let total = 0;
    for (const b of bufs) total += b.length;
    const pieces = piecesOf(offsetBytes, total);
    if (pieces.length === 0) return;
    if (pieces.length === 1) {
      const s = (await this.segment(pieces[0].k, true))!;
      await s.pwritev(bufs, pieces[0].local, dsync);
      return;
    }
    // Across a file boundary (aligned, so every cut is at an aligned point of a buffer).
    let bi = 0;
    let inBuf = 0;
    for (const p of pieces) {
      const part: Buffer[] = [];
      let need = p.length;
      while (need > 0) {
        const b = bufs[bi];
        const take = Math.min(need, b.length - inBuf);
        part.push(b.subarray(inBuf, inBuf + take));
        need -= take;
        inBuf += take;
        if (inBuf === b.length) {
          bi++;
          inBuf = 0;
        }
      }
      const s = (await this.segment(p.k, true))!;
      await s.pwritev(part, p.local, dsync);
    }
  }

  async fdatasync(): Promise<void> {
    this.assertOpen();
    await Promise.all([...this.segments.values()].map((s) => s.fdatasync()));
  }

  async fsync(): Promise<void> {
    this.assertOpen();
    await Promise.all([...this.segments.values()].map((s) => s.fsync()));
  }

  /**
   * Makes every byte at or past `offsetBytes` (aligned) a hole in every file of the volume,
   * durably, and touches nothing below it; the cost is one call per file, whatever the range.
   * A file that holds bytes at or past it is cut there (one past it wholly, to nothing: kept,
   * empty, so no directory entry changes and no descriptor in use closes); one that ends before
   * it but has blocks allocated past it (a NO_HOLE zero keeps the file's size) is cut at the
   * offset too, which on ext4 frees the blocks allocated past the file's end (extending it
   * first, when it ends before the offset: that frees nothing below the offset). Each file
   * changed is fsynced (a truncate that keeps the size is metadata fdatasync may not write).
   * Idempotent. The caller keeps the write-behind from writing past the offset meanwhile.
   */
  async discardFrom(offsetBytes: number): Promise<void> {
    assert(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0 && offsetBytes % alignmentBytes === 0, `discard from ${offsetBytes}: not an aligned offset`);
    this.assertOpen();
    for (const k of [...this.segments.keys()].sort((a, b) => a - b)) {
      const base = k * dataFileSpanBytes;
      if (base + dataFileSpanBytes <= offsetBytes) continue;
      const s = this.segments.get(k);
      if (!s) continue;
      const local = Math.max(0, offsetBytes - base);
      if ((await s.size()) > local) {
        await s.truncate(local);
      } else if (await allocatedFrom(s, local)) {
        await s.truncate(local); // to the offset (from a shorter size: an extension, nothing freed)
        await s.truncate(local); // at its size: frees what is allocated past it (ext4)
      } else {
        continue;
      }
      await s.fsync();
    }
  }

  async punchHole(offsetBytes: number, lengthBytes: number): Promise<void> {
    for (const p of piecesOf(offsetBytes, lengthBytes)) {
      const s = await this.segment(p.k, false);
      if (s) await s.punchHole(p.local, p.length); // a segment never made is a hole already
    }
  }

  async zeroRange(offsetBytes: number, lengthBytes: number): Promise<void> {
    for (const p of piecesOf(offsetBytes, lengthBytes)) {
      const s = (await this.segment(p.k, true))!;
      await s.zeroRange(p.local, p.length);
    }
  }

  async seekData(offsetBytes: number): Promise<number> {
    for (let k = Math.floor(offsetBytes / dataFileSpanBytes); k <= this.lastSegment(); k++) {
      const s = await this.segment(k, false);
      if (!s) continue;
      const base = k * dataFileSpanBytes;
      const d = await s.seekData(Math.max(0, offsetBytes - base));
      if (d >= 0) return base + d;
    }
    return -1;
  }

  async seekHole(offsetBytes: number): Promise<number> {
    const size = await this.size();
    if (offsetBytes >= size) return -1;
    for (let pos = offsetBytes; ; ) {
      const k = Math.floor(pos / dataFileSpanBytes);
      const s = await this.segment(k, false);
      if (!s) return pos;
      const base = k * dataFileSpanBytes;
      const h = await s.seekHole(pos - base);
      // Past this file's end (and before a later file's data): a hole.
      if (h < 0) return pos;
      // A file full to its span's end: the hole, if any, is in the next file.
      if (base + h < base + dataFileSpanBytes || base + h >= size) return base + h;
      pos = base + dataFileSpanBytes;
    }
  }

  async extentMap(startBytes: number, endBytes: number, maxRuns: number): Promise<Float64Array> {
    const out: number[] = [];
    const push = (from: number, to: number, kind: number): void => {
      const n = out.length;
      // Runs of a kind that meet at a file boundary are one run.
      if (n > 0 && out[n - 1] === kind && out[n - 2] === from) out[n - 2] = to;
      else out.push(from, to, kind);
    };
    if (endBytes <= startBytes) return Float64Array.from(out);
    for (const p of piecesOf(startBytes, endBytes - startBytes)) {
      const budget = maxRuns - out.length / 3;
      if (budget <= 0) break;
      const s = await this.segment(p.k, false);
      const base = p.k * dataFileSpanBytes;
      if (!s) {
        push(base + p.local, base + p.local + p.length, ExtentKind.Hole); // a file never made
        continue;
      }
      const runs = await s.extentMap(p.local, p.local + p.length, budget);
      for (let i = 0; i + 2 < runs.length; i += 3) push(base + runs[i], base + runs[i + 1], runs[i + 2]);
      // Short of the piece's end (as many runs as allowed): nothing past them is known.
      if (runs.length === 0 || runs[runs.length - 2] < p.local + p.length) break;
    }
    return Float64Array.from(out);
  }

  private lastSegment(): number {
    let last = 0;
    for (const k of this.segments.keys()) last = Math.max(last, k);
    return last;
  }

  async size(): Promise<number> {
    this.assertOpen();
    const k = this.lastSegment();
    return k * dataFileSpanBytes + (await this.segments.get(k)!.size());
  }

  async truncate(sizeBytes: number): Promise<void> {
    assert(sizeBytes <= dataFileSpanBytes, 'a volume\'s data files are truncated within their first file only');
    this.assertOpen();
    await this.segments.get(0)!.truncate(sizeBytes);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const all = [...this.segments.values()];
    this.segments.clear();
    let failed: unknown;
    for (const s of all) {
      try {
        await s.close();
      } catch (err) {
        failed ??= err;
      }
    }
    if (failed !== undefined) throw failed;
  }
}
