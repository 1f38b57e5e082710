import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * What the disk under a benchmark's files did during a run, from /proc/diskstats: how many
 * writes, flushes and bytes the device was asked for per client request, and how long each
 * took on average. Durable stores differ most in this (one copy with a flush per write, or
 * several copies with a flush per batch), and on a shared disk it is what sets their latency.
 */

/** Cumulative counters of one block device (the fields of /proc/diskstats we use). */
export interface DiskCounters {
  writes: number;
  sectorsWritten: number;
  writeMs: number;
  flushes: number;
  flushMs: number;
}

/** A run's device work divided by the client requests it served. */
export interface DiskPerOp {
  writesPerOp: number;
  flushesPerOp: number;
  kibWrittenPerOp: number;
  /** Mean time from issue to completion of a write or a flush (queueing in the device included). */
  writeMeanUs: number;
  flushMeanUs: number;
}

/**
 * The counters of device `name` in the text of /proc/diskstats. Kernels before 5.5 print no
 * flush fields (then 0). Undefined when the device is not listed.
 */
export function parseDiskstats(text: string, name: string): DiskCounters | undefined {
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 14 || f[2] !== name) continue;
    const n = (i: number): number => (i < f.length ? Number(f[i]) : 0);
    // 1-based fields: 8 writes completed, 10 sectors written, 11 ms writing, 19 flushes, 20 ms flushing.
    return { writes: n(7), sectorsWritten: n(9), writeMs: n(10), flushes: n(18), flushMs: n(19) };
  }
  return undefined;
}

/** The device work between two readings, per request (undefined without requests). */
export function diskPerOp(before: DiskCounters, after: DiskCounters, requests: number): DiskPerOp | undefined {
  if (requests <= 0) return undefined;
  const writes = after.writes - before.writes;
  const flushes = after.flushes - before.flushes;
  return {
    writesPerOp: writes / requests,
    flushesPerOp: flushes / requests,
    kibWrittenPerOp: ((after.sectorsWritten - before.sectorsWritten) * 512) / 1024 / requests,
    writeMeanUs: writes > 0 ? ((after.writeMs - before.writeMs) * 1000) / writes : 0,
    flushMeanUs: flushes > 0 ? ((after.flushMs - before.flushMs) * 1000) / flushes : 0,
  };
}

/**
 * The whole disk holding `path` (its /proc/diskstats name: `vda`, not `vda1`, since a flush
 * is the disk's), or undefined for a file system on no block device (tmpfs, overlay).
 */
export function diskOf(path: string): string | undefined {
  const dev = statSync(path).dev;
  // Linux's dev_t: minor in bits 0-7 and 20-31, major in bits 8-19 (and 32-43).
  const major = Math.floor(dev / 256) % 4096;
  const minor = (dev % 256) + Math.floor(dev / 1048576) * 256;
  const link = `/sys/dev/block/${major}:${minor}`;
  if (major === 0 || !existsSync(link)) return undefined;
  const sysDir = realpathSync(link);
  return existsSync(join(sysDir, 'partition')) ? basename(dirname(sysDir)) : basename(sysDir);
}

/** Reads the counters of `disk` now (undefined if the disk is gone from /proc/diskstats). */
export function readDisk(disk: string): DiskCounters | undefined {
  return parseDiskstats(readFileSync('/proc/diskstats', 'utf8'), disk);
}
