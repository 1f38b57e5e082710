import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { NotSupported } from '../../src/common/errors.js';
import { loadNative } from '../../src/io/native.js';
import type { BlockExtent } from '../../src/nbd/backend.js';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { RangeSet } from '../../src/nbd/file-sparse.js';
import { tempDir } from '../helpers/tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const native = loadNative();
const addonMissing = 'error' in native ? native.error : false;
if (addonMissing && process.env.CI === 'true') throw new Error(`CI requires the native addon: ${addonMissing}`);

/** The two ways the file export finds holes and deallocates: through the addon, and without it. */
const modes = [
  { name: 'addon', native: undefined, skip: addonMissing },
  { name: 'fallback', native: { error: 'forced by the test' }, skip: false as const },
] as const;

const HOLE_ZERO = { hole: true, zero: true };
const DATA = { hole: false, zero: false };

/** Allocated bytes of the file (st_blocks is in 512-byte units). */
function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/** lseek(SEEK_HOLE) through the addon, independent of the backend under test. */
function seekHole(path: string, offset: number): number {
  assert.ok('addon' in native);
  const fd = openSync(path, 'r');
  try {
    return native.addon.lseek(fd, offset, native.addon.constants.SEEK_HOLE);
  } finally {
    closeSync(fd);
  }
}

/** Flags of every byte of [offset, offset + length), asking block status again where a reply stops short. */
async function statusOf(b: FileBackend, offset: number, length: number): Promise<{ offset: number; length: number; hole: boolean; zero: boolean }[]> {
  const out: { offset: number; length: number; hole: boolean; zero: boolean }[] = [];
  let pos = offset;
  while (pos < offset + length) {
    const ext: BlockExtent[] = await b.blockStatus(pos, offset + length - pos);
    assert.ok(ext.length > 0);
    for (const e of ext) {
      const len = Math.min(e.length, offset + length - pos);
      const last = out[out.length - 1];
      if (last && last.hole === e.hole && last.zero === e.zero) last.length += len;
      else out.push({ offset: pos, length: len, hole: e.hole, zero: e.zero });
      pos += len;
      if (pos >= offset + length) break;
    }
  }
  return out;
}

async function openBackend(t: TestContext, mode: (typeof modes)[number], sizeBytes = 16 * MiB): Promise<{ b: FileBackend; path: string }> {
  const path = join(tempDir(t), 'disk.img');
  const b = await FileBackend.open(path, { createSizeBytes: sizeBytes, native: mode.native });
  t.after(() => b.close());
  assert.equal(b.sparseMode.kind, mode.name === 'addon' ? 'native' : 'fallback');
  return { b, path };
}

async function readBack(b: FileBackend, offset: number, length: number): Promise<{ data: Buffer; extents: BlockExtent[] | undefined }> {
  const data = Buffer.alloc(length, 0xee);
  const extents = await b.read(offset, length, data);
  return { data, extents };
}

for (const mode of modes) {
  test(`${mode.name}: trim deallocates (blocks shrink, SEEK_HOLE finds it) and the range is HOLE|ZERO and reads as zeros`, { skip: mode.skip }, async (t) => {
    const { b, path } = await openBackend(t, mode);
    await b.write(2 * MiB, Buffer.alloc(4 * MiB, 0x5a), false);
    await b.flush();
    const before = allocatedBytes(path);
    assert.ok(before >= 4 * MiB, `written data is allocated (${before})`);
    assert.deepEqual(await statusOf(b, 0, 8 * MiB), [
      { offset: 0, length: 2 * MiB, ...HOLE_ZERO },
      { offset: 2 * MiB, length: 4 * MiB, ...DATA },
      { offset: 6 * MiB, length: 2 * MiB, ...HOLE_ZERO },
    ]);

    await b.trim(3 * MiB, 2 * MiB, true);
    assert.ok(allocatedBytes(path) <= before - 2 * MiB, `trim freed 2 MiB (${before} -> ${allocatedBytes(path)})`);
    if ('addon' in native) assert.equal(seekHole(path, 2 * MiB), 3 * MiB, 'SEEK_HOLE finds the trimmed range');
    assert.deepEqual(await statusOf(b, 2 * MiB, 4 * MiB), [
      { offset: 2 * MiB, length: MiB, ...DATA },
      { offset: 3 * MiB, length: 2 * MiB, ...HOLE_ZERO },
      { offset: 5 * MiB, length: MiB, ...DATA },
    ]);
    const r = await readBack(b, 3 * MiB - 4 * KiB, 64 * KiB);
    assert.ok(r.data.subarray(0, 4 * KiB).every((x) => x === 0x5a));
    assert.ok(r.data.subarray(4 * KiB).every((x) => x === 0));
    assert.deepEqual(r.extents, [
      { length: 4 * KiB, ...DATA },
      { length: 60 * KiB, ...HOLE_ZERO },
    ]);
  });

  test(`${mode.name}: WRITE_ZEROES with NO_HOLE keeps the range allocated and reads zeros; without NO_HOLE it deallocates`, { skip: mode.skip }, async (t) => {
    const { b, path } = await openBackend(t, mode);
    await b.write(0, Buffer.alloc(4 * MiB, 0xa5), false);
    await b.flush();
    const before = allocatedBytes(path);

    await b.writeZeroes(MiB, 2 * MiB, { fua: true, noHole: true, fastZero: false });
    assert.ok(allocatedBytes(path) >= before, `NO_HOLE kept the range allocated (${before} -> ${allocatedBytes(path)})`);
    const z = await readBack(b, MiB - 4 * KiB, 2 * MiB + 8 * KiB);
    assert.ok(z.data.subarray(0, 4 * KiB).every((x) => x === 0xa5));
    assert.ok(z.data.subarray(4 * KiB, 4 * KiB + 2 * MiB).every((x) => x === 0), 'zeroed range reads zeros');
    assert.ok(z.data.subarray(4 * KiB + 2 * MiB).every((x) => x === 0xa5));
    if (mode.name === 'addon') {
      // Allocated zeros are not a hole: reported as zeros that are allocated.
      assert.deepEqual(await statusOf(b, 0, 4 * MiB), [
        { offset: 0, length: MiB, ...DATA },
        { offset: MiB, length: 2 * MiB, hole: false, zero: true },
        { offset: 3 * MiB, length: MiB, ...DATA },
      ]);
      // A write inside the zeroed range makes that block data again, never "zero".
      await b.write(2 * MiB, Buffer.alloc(4 * KiB, 0x11), false);
      assert.deepEqual(await statusOf(b, 2 * MiB - 4 * KiB, 12 * KiB), [
        { offset: 2 * MiB - 4 * KiB, length: 4 * KiB, hole: false, zero: true },
        { offset: 2 * MiB, length: 4 * KiB, ...DATA },
        { offset: 2 * MiB + 4 * KiB, length: 4 * KiB, hole: false, zero: true },
      ]);
    }

    await b.writeZeroes(MiB, 2 * MiB, { fua: true, noHole: false, fastZero: false });
    assert.ok(allocatedBytes(path) <= before - 2 * MiB, `without NO_HOLE the range was deallocated (${before} -> ${allocatedBytes(path)})`);
    assert.deepEqual(await statusOf(b, 0, 4 * MiB), [
      { offset: 0, length: MiB, ...DATA },
      { offset: MiB, length: 2 * MiB, ...HOLE_ZERO },
      { offset: 3 * MiB, length: MiB, ...DATA },
    ]);
  });
}

test('addon: a NO_HOLE zero is still allocated zeros after the export restarts, told by the file system', { skip: modes[0].skip }, async (t) => {
  const { b, path } = await openBackend(t, modes[0]);
  await b.write(0, Buffer.alloc(4 * MiB, 0xa5), false);
  await b.writeZeroes(MiB, 2 * MiB, { fua: true, noHole: true, fastZero: false });
  await b.write(2 * MiB, Buffer.alloc(4 * KiB, 0x11), false);
  await b.flush();
  await b.close();
  // Its pages no longer cached, as after a reboot (cached pages of an unwritten extent count
  // as data for SEEK_DATA): what the first run remembered of its zeroes is gone with it.
  const dropped = spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
  assert.equal(dropped.status, 0, `dd could not drop the file's cached pages: ${dropped.stderr}`);
  const again = await FileBackend.open(path, { native: modes[0].native });
  t.after(() => again.close());
  assert.deepEqual(await statusOf(again, 0, 4 * MiB), [
    { offset: 0, length: MiB, ...DATA },
    { offset: MiB, length: MiB, hole: false, zero: true },
    { offset: 2 * MiB, length: 4 * KiB, ...DATA },
    { offset: 2 * MiB + 4 * KiB, length: MiB - 4 * KiB, hole: false, zero: true },
    { offset: 3 * MiB, length: MiB, ...DATA },
  ]);
});

test('addon: small and unaligned trims and zeroes use fallocate: the aligned middle is a hole, partial blocks read zeros', { skip: modes[0].skip }, async (t) => {
  const { b, path } = await openBackend(t, modes[0]);
  await b.write(0, Buffer.alloc(MiB, 0x77), false);
  await b.flush();
  const before = allocatedBytes(path);

  // 64 KiB trim, below the fallback's 1 MiB threshold: still a real hole.
  await b.trim(128 * KiB, 64 * KiB, false);
  assert.ok(allocatedBytes(path) <= before - 64 * KiB, 'a 64 KiB trim deallocates');
  assert.equal(seekHole(path, 0), 128 * KiB);

  // Unaligned: [300 KiB + 100, 400 KiB + 7). Edges zeroed, whole blocks inside punched.
  const start = 300 * KiB + 100;
  const end = 400 * KiB + 7;
  await b.writeZeroes(start, end - start, { fua: false, noHole: false, fastZero: true });
  const r = await readBack(b, 296 * KiB, 112 * KiB);
  for (let i = 0; i < r.data.length; i++) {
    const dev = 296 * KiB + i;
    const want = dev >= start && dev < end ? 0 : 0x77;
    if (r.data[i] !== want) assert.fail(`byte ${dev} is ${r.data[i]}, want ${want}`);
  }
  assert.deepEqual(await statusOf(b, 296 * KiB, 112 * KiB), [
    { offset: 296 * KiB, length: 8 * KiB, ...DATA },
    { offset: 304 * KiB, length: 96 * KiB, ...HOLE_ZERO },
    { offset: 400 * KiB, length: 8 * KiB, ...DATA },
  ]);

  // FAST_ZERO with NO_HOLE is honoured through ZERO_RANGE, also for a small range.
  await b.writeZeroes(8 * KiB, 4 * KiB, { fua: false, noHole: true, fastZero: true });
  assert.ok((await readBack(b, 8 * KiB, 4 * KiB)).data.every((x) => x === 0));
});

test('fallback: FAST_ZERO fails with NotSupported only where writing zeros is all that is left', async (t) => {
  const { b } = await openBackend(t, modes[1]);
  // A small range is written with zeros on the fallback, cheaply enough for FAST_ZERO.
  await b.writeZeroes(0, 4 * KiB, { fua: false, noHole: false, fastZero: true });
  // Force the tool path off by hiding it from PATH for one call.
  const savedPath = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await assert.rejects(b.writeZeroes(0, 2 * MiB, { fua: false, noHole: false, fastZero: true }), NotSupported);
  } finally {
    process.env.PATH = savedPath;
  }
});

test('RangeSet merges, splits and walks ranges in order', () => {
  const s = new RangeSet(3);
  s.add(10, 20);
  s.add(30, 40);
  s.add(20, 25); // touches [10,20): merged
  assert.equal(s.count, 2);
  s.add(50, 60);
  s.add(70, 80); // over the limit: dropped
  assert.equal(s.count, 3);
  s.remove(12, 14); // split
  s.remove(35, 55); // trims two
  const pieces: [number, number, boolean][] = [];
  s.forEachPiece(0, 65, (a, b, inSet) => pieces.push([a, b, inSet]));
  assert.deepEqual(pieces, [
    [0, 10, false],
    [10, 12, true],
    [12, 14, false],
    [14, 25, true],
    [25, 30, false],
    [30, 35, true],
    [35, 55, false],
    [55, 60, true],
    [60, 65, false],
  ]);
  s.add(0, 100);
  assert.equal(s.count, 1);
});

test('on a file system not trusted with SEEK_DATA over buffered writes, the export tells holes from content, even with the addon', { skip: modes[0].skip }, async (t) => {
  const path = join(tempDir(t), 'disk.img');
  const asked: string[] = [];
  const b = await FileBackend.open(path, {
    createSizeBytes: 16 * MiB,
    holesTrusted: async (p) => {
      asked.push(p);
      return false;
    },
  });
  t.after(() => b.close());
  assert.deepEqual(asked, [path], 'the file itself is judged');
  assert.equal(b.sparseMode.kind, 'fallback');
  assert.match(b.sparseMode.kind === 'fallback' ? b.sparseMode.reason : '', /not one known to count data still in the page cache/);
  // A write just made is data, read straight after, and zeros never written read as a hole.
  await b.write(4 * MiB, Buffer.alloc(64 * KiB, 0x5a), false);
  assert.deepEqual(await statusOf(b, 4 * MiB - 64 * KiB, 192 * KiB), [
    { offset: 4 * MiB - 64 * KiB, length: 64 * KiB, ...HOLE_ZERO },
    { offset: 4 * MiB, length: 64 * KiB, ...DATA },
    { offset: 4 * MiB + 64 * KiB, length: 64 * KiB, ...HOLE_ZERO },
  ]);
  const { data } = await readBack(b, 4 * MiB, 64 * KiB);
  assert.ok(data.equals(Buffer.alloc(64 * KiB, 0x5a)));
  // The default judges this test's own file system, which is trusted: the addon is used.
  const trusted = await FileBackend.open(path);
  t.after(() => trusted.close());
  assert.equal(trusted.sparseMode.kind, 'native');
});
