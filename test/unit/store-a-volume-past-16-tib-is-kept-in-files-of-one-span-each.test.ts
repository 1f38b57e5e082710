/**
 * A PG replica kept each volume in one data file addressed by volume offset. ext4 refuses any
 * byte of a file at or past 16 TiB − 4 KiB (EFBIG), so the first write past it in a volume
 * (volumes go to 1 PiB) failed in the write-behind and stopped every replica of the PG, again at
 * every restart that replayed it; and a command's 48-bit offset could not name bytes past
 * 256 TiB at all. A volume's data now lies in files of dataFileSpanBytes each, and a command's
 * offset has 56 bits. Real stores on a real disk, on each backend: writes, zeros and trims past
 * 16 TiB and 256 TiB and across a file boundary are applied, made durable, read back, reported
 * by block status, survive a restart and a snapshot image, and go with their volume; a file of
 * an earlier version holding bytes past the first span has them moved at open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, closeSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { testBackends } from '../../src/io/testing.js';
import { decodeOp, encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { dataFileSpanBytes, SpannedFile } from '../../src/store/spanned-file.js';
import type { PgStore } from '../../src/store/pg-store.js';
import { Corruption } from '../../src/common/errors.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const TiB = 2 ** 40;

/** Where each write goes, and its byte: past 16 TiB, past 256 TiB, across the first file boundary. */
const writes: [offset: number, bytes: number, fill: number][] = [
  [0, B, 0x11],
  [17 * TiB, B, 0x22],
  [300 * TiB, B, 0x33],
  [dataFileSpanBytes - B, 2 * B, 0x44],
  [3 * dataFileSpanBytes + 5 * B, B, 0x55],
];

async function readBack(store: PgStore, offset: number, bytes: number): Promise<Buffer> {
  const out = Buffer.alloc(bytes, 0xee);
  await store.read(1, offset, bytes, out);
  return out;
}

async function assertHolds(store: PgStore, what: string): Promise<void> {
  for (const [offset, bytes, fill] of writes) {
    const got = await readBack(store, offset, bytes);
    assert.ok(got.every((b) => b === fill), `${what}: ${bytes} bytes at ${offset} read back`);
  }
  // Zeroed, kept allocated and punched ranges past 16 TiB read as zeros.
  assert.ok((await readBack(store, 20 * TiB, 4 * B)).every((b) => b === 0), `${what}: the NO_HOLE zero past 16 TiB`);
  assert.ok((await readBack(store, 17 * TiB + B, B)).every((b) => b === 0), `${what}: the trimmed block past 16 TiB`);
  // Never written, between files: zeros.
  assert.ok((await readBack(store, 100 * TiB, B)).every((b) => b === 0), `${what}: a block never written`);
}

test('a command names offsets past 256 TiB, and one written with the reserved byte 0 reads as before', () => {
  // Past 256 TiB the op byte carries a flag an earlier version refuses (an op above 4), rather
  // than reading the offset 256 TiB lower; below, the bytes are those of the earlier version.
  assert.equal(encodeWrite(1, 300 * TiB, Buffer.alloc(B))[0], OpKind.Write | 0x80);
  assert.equal(encodeRange(OpKind.Trim, 1, 2 ** 48 - B, B)[0], OpKind.Trim);
  const lying = encodeWrite(1, 300 * TiB, Buffer.alloc(B));
  lying[0] = OpKind.Write; // the flag cleared, the high byte kept
  assert.throws(() => decodeOp(lying), Corruption);
  for (const offset of [0, 2 ** 48 - B, 2 ** 48, 300 * TiB, 2 ** 50 - B]) {
    assert.equal(decodeOp(encodeWrite(1, offset, Buffer.alloc(B))).offset, offset);
    assert.equal(decodeOp(encodeRange(OpKind.Trim, 1, offset, B)).offset, offset);
  }
  const old = encodeRange(OpKind.Zero, 7, 5 * TiB, B);
  assert.equal(old[1], 0, 'an offset below 256 TiB leaves the once-reserved byte 0');
  assert.throws(() => encodeWrite(1, 2 ** 56, Buffer.alloc(B)), RangeError);
  assert.throws(() => encodeWrite(1, -B, Buffer.alloc(B)), RangeError);
});

for (const backend of testBackends()) {
  test(`(${backend.name}) a volume's bytes past 16 TiB and 256 TiB are applied, durable, reported, restored from an image and dropped`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    let store = await openStore(io, dir);
    let index = 0;
    for (const [offset, bytes, fill] of writes) await store.apply(++index, 1, encodeWrite(1, offset, Buffer.alloc(bytes, fill), { session: 1, seq: index }));
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, 20 * TiB, 4 * B, { session: 1, seq: index }));
    // Past the end of the last file's data: allocated, the file's size unchanged.
    await store.apply(++index, 1, encodeRange(OpKind.ZeroNoHole, 1, 301 * TiB, 2 * B, { session: 1, seq: index }));
    await store.apply(++index, 1, encodeWrite(1, 17 * TiB + B, Buffer.alloc(B, 0x66), { session: 1, seq: index }));
    await store.apply(++index, 1, encodeRange(OpKind.Trim, 1, 17 * TiB + B, B, { session: 1, seq: index }));
    // The write-behind writes every block to its file, then every file is made durable.
    await store.checkpoint();
    await assertHolds(store, 'applied');
    const files = readdirSync(dir).filter((n) => n.startsWith('vol-1')).sort();
    assert.deepEqual(files, ['vol-1.dat', 'vol-1.s1.dat', 'vol-1.s18.dat', 'vol-1.s3.dat'], 'one file per span written');

    if (backend.name === 'uring') {
      // Allocation past 16 TiB comes from the file that holds it.
      assert.deepEqual(await store.blockStatus(1, 17 * TiB, 4 * B), [
        { length: B, hole: false, zero: false },
        { length: 3 * B, hole: true, zero: true },
      ]);
      assert.deepEqual(await store.blockStatus(1, 20 * TiB, 4 * B), [{ length: 4 * B, hole: false, zero: true }], 'the NO_HOLE zero stays allocated');
    }

    await store.close();
    store = await openStore(io, dir);
    await assertHolds(store, 'after a restart');

    // A replica rebuilt from this one's image, pulled in chunks, holds the same bytes. (Not on
    // the fs backend without the addon: it tells no holes, so its image of a sparse 300 TiB
    // volume is all of it.)
    if (backend.name === 'uring') {
      const copyDir = tempDir(t);
      const copy = await openStore(io, copyDir);
      t.after(() => copy.close());
      await copy.pullImage((cursor, image) => store.imageChunk(cursor, 1024 * 1024, undefined, image), index, 1);
      await assertHolds(copy, 'restored from an image');
      assert.deepEqual(await copy.blockStatus(1, 20 * TiB, 4 * B), [{ length: 4 * B, hole: false, zero: true }], 'the NO_HOLE zero is allocated in the copy too');
      assert.deepEqual(await copy.blockStatus(1, 301 * TiB, 2 * B), [{ length: 2 * B, hole: false, zero: true }], 'and the one past the end of the data');
    }

    assert.equal(await store.dropVolume(1), true);
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('vol-')), [], 'every file of the volume removed');
    await store.close();
  });
}

for (const backend of testBackends()) {
  test(`(${backend.name}) a data file written before the split that holds bytes past one span has them moved to the next file at open`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    // One file, as an earlier version wrote it: bytes at 0 and in the last GiB below 16 TiB.
    const fd = openSync(join(dir, 'vol-1.dat'), 'w');
    writeSync(fd, Buffer.alloc(B, 0x61), 0, B, 0);
    writeSync(fd, Buffer.alloc(2 * B, 0x62), 0, 2 * B, dataFileSpanBytes + 8 * B);
    closeSync(fd);
    const store = await openStore(io, dir);
    t.after(() => store.close());
    assert.ok((await readBack(store, 0, B)).every((b) => b === 0x61));
    assert.ok((await readBack(store, dataFileSpanBytes + 8 * B, 2 * B)).every((b) => b === 0x62), 'the bytes past the span read back');
    assert.ok((await readBack(store, dataFileSpanBytes, 8 * B)).every((b) => b === 0), 'the hole before them reads as zeros');
    assert.equal(statSync(join(dir, 'vol-1.dat')).size, dataFileSpanBytes, 'the first file cut at the span');
    assert.ok(statSync(join(dir, 'vol-1.s1.dat')).size >= 10 * B, 'the bytes now in the second file');
  });
}

for (const backend of testBackends().filter((b) => b.name === 'uring')) {
  test(`(${backend.name}) data that runs across a file boundary is one run to SEEK_DATA/SEEK_HOLE and to the extent map`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    const f = await SpannedFile.open(io, dir, 1, true);
    t.after(() => f.close());
    const buf = io.allocAligned(4 * B);
    buf.fill(0x7a);
    // The last two blocks of the first file and the first two of the second, in one write.
    await f.pwrite(buf, dataFileSpanBytes - 2 * B);
    assert.equal(await f.seekData(0), dataFileSpanBytes - 2 * B);
    assert.equal(await f.seekHole(dataFileSpanBytes - 2 * B), dataFileSpanBytes + 2 * B, 'the hole is past the data in the second file');
    const map = await f.extentMap(dataFileSpanBytes - 4 * B, dataFileSpanBytes + 4 * B, 8);
    assert.deepEqual([...map], [dataFileSpanBytes - 4 * B, dataFileSpanBytes - 2 * B, 1, dataFileSpanBytes - 2 * B, dataFileSpanBytes + 2 * B, 0, dataFileSpanBytes + 2 * B, dataFileSpanBytes + 4 * B, 1]);
    const back = io.allocAligned(4 * B);
    assert.equal(await f.pread(back, dataFileSpanBytes - 2 * B), 4 * B);
    assert.ok(back.every((b) => b === 0x7a));
  });
}
