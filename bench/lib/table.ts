import type { DiskPerOp } from './disk.js';

/** One measured (server, profile) cell, as written to the JSON results. */
export interface BenchRow {
  server: string;
  profile: string;
  iops: number;
  mibps: number;
  p50Us: number;
  p99Us: number;
  /** User + system CPU of the server's processes per completed request. */
  serverCpuUsPerOp?: number;
}

/** Side data printed with the table but kept out of the JSON contract. */
export interface RowNotes {
  /** 1-minute load average when the run ended (the machine is shared: numbers are noisy). */
  load1: number;
  /** What the disk under the servers' files did per request (absent without a block device). */
  disk?: DiskPerOp;
}

/** A goal for the subject: an IOPS ratio to a peer, or a p99 latency bound. */
export type Target =
  | { profile: string; peer: string; /** Minimum subject÷peer IOPS ratio. */ minRatio: number }
  | { profile: string; maxP99Us: number };

/**
 * Prints one block per profile: every server's numbers and the subject's IOPS divided by that
 * server's (so the subject's ratio to each peer reads down one column), then the targets.
 */
export function formatTable(rows: readonly BenchRow[], notes: ReadonlyMap<BenchRow, RowNotes>, subject: string, targets: readonly Target[] = []): string {
  const profiles = [...new Set(rows.map((r) => r.profile))];
  const withCpu = rows.some((r) => r.serverCpuUsPerOp !== undefined);
  const withDisk = rows.some((r) => notes.get(r)?.disk !== undefined);
  const header = ['profile', 'server', 'IOPS', 'MiB/s', 'p50 µs', 'p99 µs', ...(withCpu ? ['CPU µs/op'] : []), `${subject} ÷ this`, 'load1',
    ...(withDisk ? ['dev writes / flushes / KiB per op', 'dev µs write / flush'] : [])];
  const lines: string[][] = [header];
  for (const profile of profiles) {
    const block = rows.filter((r) => r.profile === profile);
    const subj = block.find((r) => r.server === subject);
    for (const r of block) {
      lines.push([
        profile,
        r.server,
        fmt(r.iops, 0),
        fmt(r.mibps, 1),
        fmt(r.p50Us, 0),
        fmt(r.p99Us, 0),
        ...(withCpu ? [r.serverCpuUsPerOp === undefined ? '-' : fmt(r.serverCpuUsPerOp, 1)] : []),
        subj && r.iops > 0 ? `${(subj.iops / r.iops).toFixed(2)}×` : '-',
        fmt(notes.get(r)?.load1 ?? NaN, 2),
        ...(withDisk ? diskCells(notes.get(r)?.disk) : []),
      ]);
    }
  }
  const widths = header.map((_, c) => Math.max(...lines.map((l) => l[c].length)));
  const text = lines.map((l, i) => {
    const cells = l.map((cell, c) => (c < 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])));
    const line = '| ' + cells.join(' | ') + ' |';
    return i === 0 ? line + '\n|' + widths.map((w, c) => (c < 2 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|' : line;
  });
  const out = [text.join('\n')];
  for (const t of targets) {
    const s = rows.find((r) => r.server === subject && r.profile === t.profile);
    if (!s) continue;
    if ('maxP99Us' in t) {
      out.push(`target ${subject} p99 < ${t.maxP99Us} µs on ${t.profile}: ${fmt(s.p99Us, 0)} µs ${s.p99Us < t.maxP99Us ? 'MET' : 'MISSED'}`);
      continue;
    }
    const p = rows.find((r) => r.server === t.peer && r.profile === t.profile);
    if (!p || p.iops === 0) continue;
    const ratio = s.iops / p.iops;
    out.push(`target ${subject} ≥ ${t.minRatio}× ${t.peer} IOPS on ${t.profile}: ${ratio.toFixed(2)}× ${ratio >= t.minRatio ? 'MET' : 'MISSED'}`);
  }
  return out.join('\n');
}

function diskCells(d: DiskPerOp | undefined): string[] {
  if (!d) return ['-', '-'];
  return [`${fmt(d.writesPerOp, 2)} / ${fmt(d.flushesPerOp, 2)} / ${fmt(d.kibWrittenPerOp, 1)}`, `${fmt(d.writeMeanUs, 0)} / ${fmt(d.flushMeanUs, 0)}`];
}

function fmt(n: number, digits: number): string {
  if (!Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** The median of `runs` by IOPS (the lower middle for an even count, to stay conservative). */
export function medianByIops<T extends { iops: number }>(runs: readonly T[]): T {
  const sorted = [...runs].sort((a, b) => a.iops - b.iops);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}
