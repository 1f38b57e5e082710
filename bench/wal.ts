/**
 * `npm run bench -- wal [--out FILE] [--dir DIR] [--seconds S] [--batches 1,8,32,128] [--repeat N]`
 *
 * WAL group commit on io_uring against the fs fallback, with the device's floor measured by
 * fio in the same run (4 KiB sequential O_DIRECT writes, fdatasync after each, QD1, on the same
 * filesystem). Each measurement appends `batch` 4 KiB records in one JS turn (one per group,
 * as a Raft host does for many PGs), waits until they are durable (one batch, one RWF_DSYNC
 * write, or pwrite + fdatasync on fs), and repeats; latency is per batch, from the first append
 * to durability. Configurations are interleaved and repeated (the run with the median p50 is
 * reported) so that drift and other load on the disk hit all alike.
 *
 * Output: a table with ratios, and (with --out) a JSON array of
 * `{ backend: 'uring' | 'fallback' | 'fio-floor', batch, recordsPerSec, p50Us, p99Us }`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setLogSink } from '../src/common/log.js';
import { openBlockIo } from '../src/io/select.js';
import type { BlockIo } from '../src/io/types.js';
import { defaultDurableWriteMode } from '../src/io/uring.js';
import { crc32cImpl, crc32cNative, crc32cTs } from '../src/wal/crc32c.js';
import { Wal } from '../src/wal/index.js';
import type { WalEntry } from '../src/wal/types.js';

export interface WalBenchRow {
  backend: 'uring' | 'fallback' | 'fio-floor';
  batch: number;
  recordsPerSec: number;
  p50Us: number;
  p99Us: number;
}

interface Args {
  out: string | undefined;
  dir: string;
  seconds: number;
  batches: number[];
  repeat: number;
}

const recordBytes = 4096;

function parseArgs(argv: string[]): Args {
  const a: Args = { out: undefined, dir: '/var/tmp', seconds: 2, batches: [1, 8, 32, 128], repeat: 3 };
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].split('=', 2);
    const v = (): string => inline ?? argv[++i];
    if (k === '--out') a.out = v();
    else if (k === '--dir') a.dir = v();
    else if (k === '--seconds') a.seconds = Number(v());
    else if (k === '--batches') a.batches = v().split(',').map(Number);
    else if (k === '--repeat') a.repeat = Number(v());
    else throw new Error(`bench wal: unknown option ${k} (options: --out FILE --dir DIR --seconds S --batches 1,8,32,128 --repeat N)`);
  }
  return a;
}

function percentileUs(sortedNs: number[], p: number): number {
  if (sortedNs.length === 0) return 0;
  const i = Math.min(sortedNs.length - 1, Math.floor((p / 100) * sortedNs.length));
  return Math.round(sortedNs[i] / 100) / 10;
}

/** One WAL per backend, warmed up until segments recycle (steady state: no zero-filling). */
async function openBenchWal(io: BlockIo, dir: string, maxBatch: number): Promise<{ wal: Wal; entries: WalEntry[][] }> {
  const wal = await Wal.open({ dir, io, segmentBytes: 16 << 20, maxBatchBytes: 1 << 20, cacheBytes: 8 << 20 });
  const payload = Buffer.alloc(recordBytes, 0x5a);
  // Reused entry objects per group: the benchmark itself allocates nothing per record.
  const entries: WalEntry[][] = Array.from({ length: maxBatch }, () => [{ index: 0, term: 1, type: 0, data: payload }]);
  while (wal.stats.segmentsRecycled < 2) await step(wal, entries, maxBatch);
  // Every group's store is "durable" up to here: old segments can recycle whichever groups the
  // measurements then write to (else each new segment would be zero-filled during a run).
  await Promise.all(Array.from({ length: maxBatch }, (_, g) => wal.checkpoint(g, wal.lastIndex(g))));
  return { wal, entries };
}

async function step(wal: Wal, entries: WalEntry[][], batch: number): Promise<void> {
  const ps: Promise<void>[] = [];
  for (let g = 0; g < batch; g++) {
    const e = entries[g][0];
    e.index = wal.lastIndex(g) + 1;
    ps.push(wal.append(g, entries[g]));
    // Checkpoint now and then so that segments recycle as they would under a live store.
    if (e.index % 256 === 0) ps.push(wal.checkpoint(g, e.index - 1));
  }
  await Promise.all(ps);
}

async function measure(wal: Wal, entries: WalEntry[][], batch: number, seconds: number): Promise<{ recordsPerSec: number; p50Us: number; p99Us: number }> {
  const lat: number[] = [];
  const start = process.hrtime.bigint();
  const endNs = start + BigInt(Math.round(seconds * 1e9));
  const batchesBefore = wal.stats.batchesWritten;
  const createdBefore = wal.stats.segmentsCreated;
  let records = 0;
  for (;;) {
    const t0 = process.hrtime.bigint();
    if (t0 >= endNs) break;
    await step(wal, entries, batch);
    lat.push(Number(process.hrtime.bigint() - t0));
    records += batch;
  }
  const elapsedS = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((a, b) => a - b);
  const batches = wal.stats.batchesWritten - batchesBefore;
  if (batches > lat.length * 1.05) process.stderr.write(`bench wal: batch ${batch} took ${batches} writes for ${lat.length} steps\n`);
  if (wal.stats.segmentsCreated > createdBefore) process.stderr.write(`bench wal: batch ${batch}: ${wal.stats.segmentsCreated - createdBefore} segments zero-filled during the run\n`);
  return { recordsPerSec: Math.round(records / elapsedS), p50Us: percentileUs(lat, 50), p99Us: percentileUs(lat, 99) };
}

function fioFloor(dir: string, seconds: number): WalBenchRow {
  const file = join(dir, 'fio-floor.dat');
  // Written out first, like the WAL's preallocated segments: fio's default layout uses
  // fallocate, whose unwritten extents would add a journal commit to every fdatasync.
  const fill = spawnSync('fio', ['--name=layout', `--filename=${file}`, '--rw=write', '--bs=1M', '--direct=1', '--size=64M', '--end_fsync=1', '--output-format=terse'], { encoding: 'utf8' });
  if (fill.status !== 0) throw new Error(`bench wal: fio failed (is fio installed?): ${fill.stderr || fill.error}`);
  const r = spawnSync(
    'fio',
    [
      '--name=floor',
      `--filename=${file}`,
      '--rw=write',
      '--bs=4k',
      '--direct=1',
      '--fdatasync=1',
      '--iodepth=1',
      '--ioengine=psync',
      '--size=64M',
      '--fallocate=none',
      `--runtime=${Math.max(1, Math.round(seconds))}`,
      '--time_based',
      '--output-format=json',
    ],
    { encoding: 'utf8' },
  );
  rmSync(file, { force: true });
  if (r.status !== 0) throw new Error(`bench wal: fio failed (is fio installed?): ${r.stderr || r.error}`);
  const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const w = job.write;
  const sync = job.sync;
  const pct = (o: { percentile?: Record<string, number> } | undefined, p: string): number => o?.percentile?.[p] ?? 0;
  // One record = its write plus the fdatasync after it.
  const p50Ns = pct(w.clat_ns, '50.000000') + pct(sync?.lat_ns, '50.000000');
  const p99Ns = pct(w.clat_ns, '99.000000') + pct(sync?.lat_ns, '99.000000');
  return { backend: 'fio-floor', batch: 1, recordsPerSec: Math.round(w.iops), p50Us: Math.round(p50Ns / 100) / 10, p99Us: Math.round(p99Ns / 100) / 10 };
}

function crcReport(): string {
  const buf = Buffer.alloc(recordBytes + 40, 7);
  const time = (f: (b: Uint8Array, s?: number, e?: number, seed?: number) => number): number => {
    for (let i = 0; i < 2000; i++) f(buf, 0, buf.length, 0);
    const n = 20000;
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f(buf, 0, buf.length, 0);
    return Number(process.hrtime.bigint() - t) / n;
  };
  const ts = time(crc32cTs);
  const hw = crc32cNative ? time(crc32cNative) : NaN;
  return `CRC32C of a 4 KiB record: slicing-by-8 (TS) ${(ts / 1000).toFixed(2)} µs, SSE4.2 (addon) ${Number.isNaN(hw) ? 'n/a' : (hw / 1000).toFixed(2) + ' µs'}; in use: ${crc32cImpl}`;
}

export async function run(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  setLogSink(() => undefined);
  const root = mkdtempSync(join(args.dir, 'raftblock-bench-wal-'));
  try {
    const maxBatch = Math.max(...args.batches);
    const altMode = defaultDurableWriteMode === 'fdatasync' ? 'rwf-dsync' : 'fdatasync';
    const uringIo = await openBlockIo({ probeDir: root, backend: 'uring' });
    const uringAltIo = await openBlockIo({ probeDir: root, backend: 'uring', durableWrites: altMode });
    const fsIo = await openBlockIo({ probeDir: root, backend: 'fs' });
    process.stderr.write('bench wal: warming up (until segments recycle)...\n');
    const setups = {
      uring: await openBenchWal(uringIo, join(root, 'uring'), maxBatch),
      fallback: await openBenchWal(fsIo, join(root, 'fallback'), maxBatch),
      // The other way to make a direct write durable, for the record (not in the JSON).
      'uring-alt': await openBenchWal(uringAltIo, join(root, 'uring-alt'), maxBatch),
    };
    // Every configuration runs `repeat` times, interleaved; the run with the median p50 is kept.
    const runs = new Map<string, WalBenchRow[]>();
    const keep = (r: WalBenchRow): void => {
      const k = `${r.backend}/${r.batch}`;
      runs.set(k, [...(runs.get(k) ?? []), r]);
    };
    for (let rep = 1; rep <= args.repeat; rep++) {
      process.stderr.write(`bench wal: [${rep}/${args.repeat}] fio floor (${args.seconds}s)...\n`);
      keep(fioFloor(root, args.seconds));
      for (const batch of args.batches) {
        for (const backend of ['uring', 'fallback', 'uring-alt'] as const) {
          process.stderr.write(`bench wal: [${rep}/${args.repeat}] ${backend} batch ${batch} (${args.seconds}s)...\n`);
          const s = setups[backend];
          await measure(s.wal, s.entries, batch, Math.min(0.3, args.seconds / 4)); // settle
          keep({ backend: backend as WalBenchRow['backend'], batch, ...(await measure(s.wal, s.entries, batch, args.seconds)) });
        }
      }
    }
    const median = (rs: WalBenchRow[]): WalBenchRow => [...rs].sort((a, b) => a.p50Us - b.p50Us)[Math.floor(rs.length / 2)];
    const rows: WalBenchRow[] = [median(runs.get('fio-floor/1')!)];
    for (const batch of args.batches) for (const backend of ['uring', 'fallback']) rows.push(median(runs.get(`${backend}/${batch}`)!));
    const alt = args.batches.map((batch) => median(runs.get(`uring-alt/${batch}`)!));
    for (const s of Object.values(setups)) await s.wal.close();
    await uringIo.close();
    await uringAltIo.close();
    await fsIo.close();

    const floor = rows[0];
    const header = ['backend', 'batch', 'records/s', 'p50 µs', 'p99 µs', 'uring/fallback', 'p50/floor'];
    const lines = rows.map((r) => {
      const other = rows.find((o) => o.batch === r.batch && o.backend === 'fallback');
      const ratio = r.backend === 'uring' && other ? (r.recordsPerSec / other.recordsPerSec).toFixed(2) + '×' : '';
      const vsFloor = r.backend !== 'fio-floor' ? (r.p50Us / floor.p50Us).toFixed(2) + '×' : '';
      return [r.backend, String(r.batch), String(r.recordsPerSec), r.p50Us.toFixed(1), r.p99Us.toFixed(1), ratio, vsFloor];
    });
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    const fmt = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
    const out = [fmt(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...lines.map(fmt)].join('\n');
    process.stdout.write(out + '\n\n');
    process.stdout.write(`uring durable writes: ${defaultDurableWriteMode} (in the table); with ${altMode} instead:\n`);
    for (const r of alt) {
      const main = rows.find((o) => o.backend === 'uring' && o.batch === r.batch)!;
      process.stdout.write(`  batch ${String(r.batch).padStart(3)}: ${r.recordsPerSec} records/s, p50 ${r.p50Us.toFixed(1)} µs, p99 ${r.p99Us.toFixed(1)} µs (${(r.p50Us / main.p50Us).toFixed(2)}× the p50 above)\n`);
    }
    process.stdout.write('\n' + crcReport() + '\n');
    const u32 = rows.find((r) => r.backend === 'uring' && r.batch === 32);
    const f32 = rows.find((r) => r.backend === 'fallback' && r.batch === 32);
    const u1 = rows.find((r) => r.backend === 'uring' && r.batch === 1);
    if (u32 && f32) process.stdout.write(`target io_uring >= 1.3x fallback at batch 32: ${(u32.recordsPerSec / f32.recordsPerSec).toFixed(2)}x\n`);
    if (u1) process.stdout.write(`target batch-1 p50 within 1.5x of the fio floor: ${(u1.p50Us / floor.p50Us).toFixed(2)}x\n`);
    if (args.out) writeFileSync(args.out, JSON.stringify(rows, null, 2) + '\n');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
