import assert from 'node:assert/strict';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { diskOf, diskPerOp, parseDiskstats, readDisk } from '../../bench/lib/disk.js';

// Two lines of a 6.x /proc/diskstats (20 fields) and one of a pre-5.5 kernel (14 fields).
const sample = [
  ' 254       0 vda 5213 12 401234 2210 910000 4000 29000000 812345 0 700000 900000 0 0 0 0 45000 17000',
  ' 254       1 vda1 5000 12 400000 2200 900000 4000 28000000 800000 0 690000 890000 0 0 0 0 0 0',
  '   8       0 sda 10 0 80 5 20 0 160 7 0 12 12',
].join('\n');

test('diskstats: the named whole disk, writes, sectors, write and flush times', () => {
  assert.deepEqual(parseDiskstats(sample, 'vda'), { writes: 910000, sectorsWritten: 29000000, writeMs: 812345, flushes: 45000, flushMs: 17000 });
  assert.equal(parseDiskstats(sample, 'vd'), undefined, 'a prefix is not a name');
  assert.equal(parseDiskstats(sample, 'nvme0n1'), undefined);
  // An old kernel prints no flush fields: no flushes rather than garbage.
  assert.equal(parseDiskstats(' 8 0 sda 10 0 80 5 20 0 160 7 0 12 12 0 0 0', 'sda')?.flushes, 0);
});

test('per request: counter deltas divided by the requests, times per operation', () => {
  const before = { writes: 1000, sectorsWritten: 80_000, writeMs: 500, flushes: 100, flushMs: 40 };
  const after = { writes: 4500, sectorsWritten: 80_000 + 1000 * 50, writeMs: 500 + 3500, flushes: 300, flushMs: 40 + 60 };
  const d = diskPerOp(before, after, 1000);
  assert.ok(d);
  assert.equal(d.writesPerOp, 3.5);
  assert.equal(d.flushesPerOp, 0.2);
  assert.equal(d.kibWrittenPerOp, 25); // 50 sectors of 512 bytes per request
  assert.equal(d.writeMeanUs, 1000);
  assert.equal(d.flushMeanUs, 300);
  assert.equal(diskPerOp(before, before, 0), undefined, 'no requests, nothing per request');
  assert.equal(diskPerOp(before, { ...before, writes: 1001 }, 10)?.flushMeanUs, 0, 'no flush: no mean');
});

test('the disk under a real directory counts a durable write; tmpfs has none', () => {
  const dir = mkdtempSync('/var/tmp/raftblock-disk-');
  try {
    const disk = diskOf(dir);
    assert.ok(disk, '/var/tmp is on a block device here');
    assert.doesNotMatch(disk, /^(vd|sd|xvd)[a-z]+\d+$/, 'a partition was named instead of its disk');
    const before = readDisk(disk);
    assert.ok(before, `${disk} is listed in /proc/diskstats`);
    const fd = openSync(join(dir, 'f'), 'w');
    writeSync(fd, Buffer.alloc(64 * 1024, 7));
    fdatasyncSync(fd);
    closeSync(fd);
    const after = readDisk(disk);
    assert.ok(after);
    assert.ok(after.writes > before.writes, 'the write reached the disk');
    assert.ok(after.sectorsWritten >= before.sectorsWritten + 128, '64 KiB at least');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(diskOf('/dev/shm'), undefined);
});
