/**
 * BLOCK_STATUS walks the file's extents (SEEK_DATA/SEEK_HOLE, FIEMAP) on a pool thread, not on
 * the event loop: on ext4 those calls wait for a punch or zero of the same file, seconds for
 * gigabytes, and every client of the process waited with them. A slow walk stands in for the
 * wait here: a file of tens of thousands of unwritten extents between holes, which one
 * lseek(SEEK_DATA) crosses one by one (milliseconds). While it runs, the event loop must turn
 * and serve another request; a walk on the event loop turns it not once.
 *
 * Real files on a real disk, for the file export and for a PG store.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { testBackends } from '../../src/io/testing.js';
import { type BlockIo, ExtentKind } from '../../src/io/types.js';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';
import { turnsWhile } from '../helpers/event-loop.js';

const B = 4096;
/** The first three extents of makeUnwrittenComb's file: unwritten, hole, unwritten, a block each. */
const combHeadExtents = [
  { length: B, hole: false, zero: true },
  { length: B, hole: true, zero: true },
  { length: B, hole: false, zero: true },
];
/** Unwritten extents SEEK_DATA crosses in one call: about 10 ms of kernel time here. */
const unwrittenExtents = 40_000;
const uring = testBackends()[0];

/**
 * `path` as: an unwritten block, a hole, an unwritten block, ... (`unwrittenExtents` of them),
 * then one written block; returns the file size.
 */
async function makeUnwrittenComb(io: BlockIo, path: string): Promise<number> {
  const f = await io.open(path, { create: true });
  try {
    const inFlight: Promise<void>[] = [];
    for (let i = 0; i < unwrittenExtents; i++) {
      inFlight.push(f.zeroRange(2 * i * B, B));
      if (inFlight.length >= 256) await Promise.all(inFlight.splice(0));
    }
    await Promise.all(inFlight);
    const size = 2 * unwrittenExtents * B + B;
    await f.pwrite(io.allocAligned(B).fill(0x33), size - B, true);
    return size;
  } finally {
    await f.close();
  }
}

test('file export: the event loop turns and a READ is answered while a BLOCK_STATUS walks the extents', { skip: uring.skip }, async (t) => {
  const io = uring.make();
  t.after(() => io.close());
  const path = join(tempDir(t), 'comb.img');
  const size = await makeUnwrittenComb(io, path);
  const b = await FileBackend.open(path);
  t.after(() => b.close());
  assert.equal(b.sparseMode.kind, 'native');

  const order: string[] = [];
  const status = b.blockStatus(0, size).then((extents) => {
    order.push('block status');
    return extents;
  });
  const read = b.read(size - B, B, Buffer.alloc(B)).then(() => order.push('read'));
  const { value: extents, turns } = await turnsWhile(status);
  await read;
  assert.ok(turns > 0, 'the event loop did not turn while the extents were walked');
  assert.deepEqual(order, ['read', 'block status'], 'a READ asked after the BLOCK_STATUS waited for its walk');
  // The answer itself: unwritten (allocated zeros) and holes in turn, from the start.
  assert.deepEqual(extents.slice(0, 3), combHeadExtents);
});

test('PG store: the event loop turns while a block status walks the extents of a data file', { skip: uring.skip }, async (t) => {
  const io = uring.make();
  t.after(() => io.close());
  const dir = tempDir(t);
  // The store makes the volume's data file; its layout is then made underneath, store closed.
  let store = await openStore(io, dir);
  await store.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(B, 0x11), { session: 1, seq: 1 }));
  await store.checkpoint();
  await store.close();
  const size = await makeUnwrittenComb(io, join(dir, 'vol-1.dat'));
  store = await openStore(io, dir);
  t.after(() => store.close());
  // Once so that the file is open and nothing is dirty: the next call awaits only its walk.
  await store.blockStatus(1, 0, size);

  const { value: extents, turns } = await turnsWhile(store.blockStatus(1, 0, size));
  assert.ok(turns > 0, 'the event loop did not turn while the extents were walked');
  assert.deepEqual(extents.slice(0, 3), combHeadExtents);
});

test('a file closed while its extents are walked keeps its descriptor until the walk ends', { skip: uring.skip }, async (t) => {
  const io = uring.make();
  t.after(() => io.close());
  const dir = tempDir(t);
  const size = await makeUnwrittenComb(io, join(dir, 'comb.img'));
  // The walk uses the descriptor number from a pool thread: closed under it, the number could
  // name a file opened since, and the walk would go on in that one.
  const expectedHead = [0, B, ExtentKind.Unwritten, B, 2 * B, ExtentKind.Hole];
  const f = await io.open(join(dir, 'comb.img'));
  const events: string[] = [];
  const walked = f.extentMap(0, size, 8).then((runs) => {
    events.push('walked');
    return runs;
  });
  await f.close().then(() => events.push('closed'));
  assert.deepEqual(events, ['walked', 'closed']);
  assert.deepEqual([...(await walked).subarray(0, 6)], expectedHead);

  const b = await FileBackend.open(join(dir, 'comb.img'));
  events.length = 0;
  const status = b.blockStatus(0, size).then((extents) => {
    events.push('walked');
    return extents;
  });
  await b.close().then(() => events.push('closed'));
  assert.deepEqual(events, ['walked', 'closed']);
  assert.deepEqual((await status)[0], { length: B, hole: false, zero: true });
});
