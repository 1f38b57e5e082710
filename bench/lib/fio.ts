import { spawn } from 'node:child_process';

/**
 * fio with its nbd engine (libnbd inside fio): one connection, `iodepth` requests in flight.
 * fio issues no FLUSH unless a profile sets `fsyncEvery`, so the plain profiles measure what a
 * server acknowledges, not what it has made durable; bench/README.md says what each server's
 * acknowledgement means.
 */
export interface FioProfile {
  /** Stable name, used in tables and JSON. */
  name: string;
  rw: 'randwrite' | 'randread' | 'write' | 'read';
  blockBytes: number;
  iodepth: number;
  /** When set, fio sends a FLUSH after every this many writes. */
  fsyncEvery?: number;
}

const KiB = 1024;

/** The four profiles of the NBD and cluster benchmarks. */
export const standardProfiles: readonly FioProfile[] = [
  { name: '4k-randwrite-qd1', rw: 'randwrite', blockBytes: 4 * KiB, iodepth: 1 },
  { name: '4k-randwrite-qd32', rw: 'randwrite', blockBytes: 4 * KiB, iodepth: 32 },
  { name: '4k-randread-qd32', rw: 'randread', blockBytes: 4 * KiB, iodepth: 32 },
  { name: '512k-seqwrite-qd8', rw: 'write', blockBytes: 512 * KiB, iodepth: 8 },
];

/** Write profiles that also FLUSH: what durability costs each server. */
export const flushProfiles: readonly FioProfile[] = [
  { name: '4k-randwrite-qd32-flush32', rw: 'randwrite', blockBytes: 4 * KiB, iodepth: 32, fsyncEvery: 32 },
  { name: '512k-seqwrite-qd8-flush8', rw: 'write', blockBytes: 512 * KiB, iodepth: 8, fsyncEvery: 8 },
];

export interface FioResult {
  iops: number;
  mibps: number;
  /** Completion latency percentiles in microseconds (submission to reply). */
  p50Us: number;
  p99Us: number;
  /** Requests completed in the measured interval (reads + writes). */
  ios: number;
}

/** Runs one time-based profile against `uri` and returns its numbers. */
export async function runFioProfile(uri: string, profile: FioProfile, runtimeS: number, sizeBytes: number): Promise<FioResult> {
  const args = [
    '--name=' + profile.name,
    '--ioengine=nbd',
    '--uri=' + uri,
    '--rw=' + profile.rw,
    '--bs=' + profile.blockBytes,
    '--iodepth=' + profile.iodepth,
    '--size=' + sizeBytes,
    '--time_based',
    '--runtime=' + runtimeS,
    // fio's own bookkeeping of which blocks it touched costs client CPU on a shared machine.
    '--norandommap',
    '--randrepeat=0',
    '--output-format=json',
  ];
  if (profile.fsyncEvery !== undefined) args.push('--fsync=' + profile.fsyncEvery);
  const text = await runFio(args, runtimeS + 120);
  return parseFioJson(text);
}

/**
 * Writes every byte of the export once (1 MiB sequential writes), so reads return data and
 * writes land on allocated blocks for every server alike.
 */
export async function prefill(uri: string, sizeBytes: number): Promise<void> {
  const args = [
    '--name=prefill',
    '--ioengine=nbd',
    '--uri=' + uri,
    '--rw=write',
    '--bs=1M',
    '--iodepth=8',
    '--size=' + sizeBytes,
    '--output-format=json',
  ];
  // Generous: a 1 GiB fill through a slow server on a busy machine.
  await runFio(args, 600);
}

function runFio(args: string[], timeoutS: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      if (code === 0) return resolve(stdout);
      const stderr = Buffer.concat(err).toString('utf8').trim();
      reject(new Error(`fio ${args[0]} failed (${signal ?? 'exit ' + code}): ${stderr || stdout.slice(0, 2000)}`));
    });
  });
}

interface FioDirStats {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns?: { percentile?: Record<string, number> };
}

/**
 * Parses fio's JSON report. The nbd engine prints "fio: connected to NBD server" on stdout
 * before the JSON, so the document starts at the first line that opens an object.
 */
export function parseFioJson(text: string): FioResult {
  const start = text.startsWith('{') ? 0 : text.indexOf('\n{') + 1;
  if (start <= 0 && !text.startsWith('{')) throw new Error(`fio printed no JSON: ${text.slice(0, 500)}`);
  const doc = JSON.parse(text.slice(start)) as { jobs: Array<{ error: number; read: FioDirStats; write: FioDirStats }> };
  const job = doc.jobs[0];
  if (!job) throw new Error('fio JSON has no jobs');
  if (job.error !== 0) throw new Error(`fio job failed with error ${job.error}`);
  // The direction that did the work carries the latency we report.
  const main = job.write.total_ios >= job.read.total_ios ? job.write : job.read;
  const pct = main.clat_ns?.percentile ?? {};
  return {
    iops: job.read.iops + job.write.iops,
    mibps: (job.read.bw_bytes + job.write.bw_bytes) / (1024 * 1024),
    p50Us: (pct['50.000000'] ?? 0) / 1000,
    p99Us: (pct['99.000000'] ?? 0) / 1000,
    ios: job.read.total_ios + job.write.total_ios,
  };
}
