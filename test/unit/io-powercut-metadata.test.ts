/**
 * The power-cut model (src/io/powercut.ts) undoes metadata changes that were not made durable:
 * a truncate (its old size and the bytes it cut off come back), a punch or zero range (the
 * bytes come back), a truncate that kept the size (the blocks it freed past the end are
 * allocated again). fdatasync makes all of them durable but the last, which only fsync does
 * (or a newer change made durable); a completed DSYNC write makes the ones completed before
 * it durable, as fdatasync does, but not the plain writes. Undos run newest first, whole per
 * change, the newest few only (a journal commits in order); a truncate that stays keeps an
 * older write's undo from bringing back what it cut off, and a completed DSYNC write is never
 * undone. On a real disk, on each backend; every file is read
 * back through the real backend after the cut.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { PowerCutIo, seededRandom } from '../../src/io/powercut.js';
import { testBackends } from '../../src/io/testing.js';
import { type BlockFile, type BlockIo, ExtentKind } from '../../src/io/types.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
/** A draw that undoes every unsynced change at the cut (and rolls back every block of a write). */
const undoAll = (): number => 0.9;
/** A draw that undoes no metadata change and rolls back no write block. */
const undoNothing = (): number => 0.1;

/** A file's bytes (its whole size), read through the real backend. */
async function contents(io: BlockIo, path: string): Promise<Buffer> {
  const f = await io.open(path);
  try {
    const size = await f.size();
    if (size === 0) return Buffer.alloc(0);
    const buf = io.allocAligned(Math.ceil(size / B) * B);
    const n = await f.pread(buf, 0);
    assert.equal(n, size);
    return Buffer.from(buf.subarray(0, size));
  } finally {
    await f.close();
  }
}

/** `fills` as blocks, one byte value each (0: a zero block). */
function blocks(...fills: number[]): Buffer {
  return Buffer.concat(fills.map((x) => Buffer.alloc(B, x)));
}

async function writeBlock(io: BlockIo, f: BlockFile, index: number, fill: number, dsync = false): Promise<void> {
  const buf = io.allocAligned(B);
  buf.fill(fill);
  await f.pwrite(buf, index * B, dsync);
}

/** A file of `fills` blocks, written and made durable through `cut` (the changes after it are the test's). */
async function durableFile(cut: PowerCutIo, path: string, fills: number[]): Promise<BlockFile> {
  const f = await cut.open(path, { create: true });
  for (let i = 0; i < fills.length; i++) if (fills[i] !== 0) await writeBlock(cut, f, i, fills[i]);
  await f.truncate(fills.length * B);
  await f.fsync();
  return f;
}

/** The extent map as [from, to, kind] tuples. */
async function runsOf(io: BlockIo, path: string, start: number, end: number): Promise<[number, number, number][]> {
  const f = await io.open(path);
  try {
    const flat = await f.extentMap(start, end, 100);
    const out: [number, number, number][] = [];
    for (let i = 0; i < flat.length; i += 3) out.push([flat[i], flat[i + 1], flat[i + 2]]);
    return out;
  } finally {
    await f.close();
  }
}

for (const backend of testBackends()) {
  const name = backend.name;

  test(`${name}: a truncate not synced is undone at a cut (old size, cut-off bytes back, holes too); fdatasync or fsync keeps it`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const dir = tempDir(t);
    // Blocks 4..7 are a hole on uring: the truncate's undo must bring back block 8 past them.
    const base = [1, 2, 3, 4, 0, 0, 0, 0, 9];
    for (const sync of ['none', 'fdatasync', 'fsync'] as const) {
      for (const [what, toBytes] of [['shrink', B], ['shrink to nothing', 0], ['extension', 20 * B]] as const) {
        const path = join(dir, `${sync}-${toBytes}`);
        const cut = new PowerCutIo(inner, undoAll);
        const f = await durableFile(cut, path, base);
        await f.truncate(toBytes);
        if (sync !== 'none') await f[sync]();
        const r = await cut.powerCut();
        const want = sync === 'none' ? blocks(...base) : toBytes < base.length * B ? blocks(...base).subarray(0, toBytes) : Buffer.concat([blocks(...base), Buffer.alloc(toBytes - base.length * B)]);
        assert.ok((await contents(inner, path)).equals(want), `${what} with ${sync}: the file as the model says`);
        assert.equal(r.undoneMetadataChanges, sync === 'none' ? 1 : 0, `${what} with ${sync}: changes undone`);
      }
    }
  });

  test(`${name}: a punch or zero range not synced is undone at a cut; fdatasync keeps it`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const dir = tempDir(t);
    for (const sync of ['none', 'fdatasync'] as const) {
      const path = join(dir, sync);
      const cut = new PowerCutIo(inner, undoAll);
      const f = await durableFile(cut, path, [1, 2, 3, 4, 5]);
      await f.punchHole(B, B);
      await f.zeroRange(3 * B, 2 * B);
      // Past the end of the file: nothing to bring back, and the undo must not grow the file.
      await f.punchHole(8 * B, 2 * B);
      if (sync !== 'none') await f[sync]();
      await cut.powerCut();
      const got = await contents(inner, path);
      // The fs backend punches by writing zeros: past the end, that grew the file.
      const synced = name === 'fs' ? blocks(1, 0, 3, 0, 0, 0, 0, 0, 0, 0) : blocks(1, 0, 3, 0, 0);
      assert.ok(got.equals(sync === 'none' ? blocks(1, 2, 3, 4, 5) : synced), `with ${sync}: [${[...got.filter((_, i) => i % B === 0)]}]`);
    }
  });

  test(`${name}: interleaved writes, truncates, punches and zeros over the same blocks: undone newest first to the synced bytes, or none undone`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const dir = tempDir(t);
    const base = [1, 2, 3, 4, 5, 6];
    const changes = async (cut: PowerCutIo, f: BlockFile): Promise<void> => {
      await writeBlock(cut, f, 2, 0x21);
      await f.truncate(3 * B); // cuts off 4, 5, 6
      await writeBlock(cut, f, 4, 0x41); // past the end: block 3 reads zeros
      await f.punchHole(B, 2 * B); // 2 and 0x21
      await writeBlock(cut, f, 1, 0x11);
      await f.truncate(2 * B); // cuts off the hole at 2, zeros at 3, and 0x41
      await f.zeroRange(0, B);
      await writeBlock(cut, f, 0, 0x01);
      await writeBlock(cut, f, 3, 0x31);
    };
    for (const [what, random, want] of [
      ['every change undone', undoAll, blocks(...base)],
      ['no change undone', undoNothing, blocks(0x01, 0x11, 0, 0x31)],
    ] as const) {
      const path = join(dir, what);
      const cut = new PowerCutIo(inner, random);
      const f = await durableFile(cut, path, base);
      await changes(cut, f);
      await cut.powerCut();
      const got = await contents(inner, path);
      assert.ok(got.equals(want), `${what}: got [${[...got.filter((_, i) => i % B === 0)].map((x) => x.toString(16))}]`);
    }
  });

  test(`${name}: metadata changes are undone as a journal loses them: only the newest few, each whole`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const dir = tempDir(t);
    const base = [1, 2, 3, 4, 5, 6, 7, 8];
    /** The changes, each with the file it leaves (the one before it is what undoing it brings back). */
    const steps: [(f: BlockFile) => Promise<void>, Buffer][] = [
      [(f) => f.punchHole(2 * B, B), blocks(1, 2, 0, 4, 5, 6, 7, 8)],
      [(f) => f.truncate(6 * B), blocks(1, 2, 0, 4, 5, 6)],
      [(f) => f.zeroRange(B, 2 * B), blocks(1, 0, 0, 4, 5, 6)],
      [(f) => f.truncate(4 * B), blocks(1, 0, 0, 4)],
      [(f) => f.truncate(7 * B), blocks(1, 0, 0, 4, 0, 0, 0)],
      [(f) => f.punchHole(3 * B, B), blocks(1, 0, 0, 0, 0, 0, 0)],
    ];
    const states = [blocks(...base), ...steps.map(([, s]) => s)];
    const n = steps.length;
    const seen = new Set<number>();
    // Every count from none to all (a draw per count), then seeded draws.
    const draws: [string, () => number][] = [];
    for (let k = 0; k <= n; k++) draws.push([`${k} undone`, () => (k + 0.5) / (n + 1)]);
    for (let seed = 1; seed <= 6; seed++) draws.push([`seed ${seed}`, seededRandom(seed)]);
    for (const [what, random] of draws) {
      const path = join(dir, what);
      const cut = new PowerCutIo(inner, random);
      const f = await durableFile(cut, path, base);
      for (const [step] of steps) await step(f);
      const r = await cut.powerCut();
      seen.add(r.undoneMetadataChanges);
      const got = await contents(inner, path);
      assert.ok(got.equals(states[n - r.undoneMetadataChanges]), `${what}: the newest ${r.undoneMetadataChanges} undone, got [${[...got.filter((_, i) => i % B === 0)]}]`);
    }
    assert.equal(seen.size, n + 1, 'every count of undone changes was seen');
  });

  test(`${name}: a truncate that stays keeps an older unsynced write from coming back past its end`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const path = join(tempDir(t), 'f');
    // The cut's draws: the metadata draw (no change undone), then the write's one block (rolled back).
    const draws = [0.1, 0.9];
    const cut = new PowerCutIo(inner, () => draws.shift() ?? 0.9);
    const f = await durableFile(cut, path, [1, 2, 3, 4]);
    await writeBlock(cut, f, 3, 0x33);
    await f.truncate(2 * B);
    const r = await cut.powerCut();
    assert.deepEqual(r, { tornWrites: 0, rolledBackWrites: 1, undoneMetadataChanges: 0 });
    assert.ok((await contents(inner, path)).equals(blocks(1, 2)), 'the truncate stayed; block 3 did not come back');
  });

  test(`${name}: a DSYNC write makes the truncates, punches and zeros completed before it durable, not the plain writes`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const path = join(tempDir(t), 'f');
    const cut = new PowerCutIo(inner, undoAll);
    const f = await durableFile(cut, path, [1, 2, 3, 4, 5]);
    await writeBlock(cut, f, 0, 0x11);
    await writeBlock(cut, f, 4, 0x44);
    await f.punchHole(0, B);
    await f.truncate(2 * B);
    await writeBlock(cut, f, 3, 0x77, true);
    await writeBlock(cut, f, 1, 0x66);
    const r = await cut.powerCut();
    assert.equal(r.undoneMetadataChanges, 0, 'the punch and the truncate were synced by the DSYNC write');
    // The plain write at block 1 is rolled back (its old bytes, 2, come back); the older ones
    // are rolled back too, but not over the durable punch (block 0 stays a hole) nor past the
    // durable truncate's end (block 4 does not come back).
    assert.ok((await contents(inner, path)).equals(blocks(0, 2, 0, 0x77)), 'the synced size and punch; the plain writes rolled back');
  });

  test(`${name}: a DSYNC write is not undone by the undo of a truncate that completed while it was under way`, { skip: backend.skip }, async (t) => {
    const inner = backend.make();
    t.after(() => inner.close());
    const path = join(tempDir(t), 'f');
    // Held 180 ms before it is written: the truncate completes meanwhile, after it began.
    const cut = new PowerCutIo(inner, undoAll, 200);
    const f = await durableFile(cut, path, [1, 2, 3, 4, 5]);
    const dsync = writeBlock(cut, f, 2, 0x77, true);
    await f.truncate(B);
    await dsync;
    const r = await cut.powerCut();
    assert.equal(r.undoneMetadataChanges, 1);
    assert.ok((await contents(inner, path)).equals(blocks(1, 2, 0x77, 4, 5)), 'the old size and bytes are back, but for the DSYNC write');
  });
}

test('uring: a truncate that keeps the size is undone at a cut unless fsynced: fdatasync leaves the blocks it freed past the end', { skip: testBackends()[0].skip }, async (t) => {
  const inner = testBackends()[0].make();
  t.after(() => inner.close());
  const dir = tempDir(t);
  for (const sync of ['fdatasync', 'fsync'] as const) {
    const path = join(dir, sync);
    const cut = new PowerCutIo(inner, undoAll);
    const f = await durableFile(cut, path, [1]);
    await f.zeroRange(4 * B, 2 * B); // past the end, the size kept: allocated, unwritten
    await f.fsync();
    assert.deepEqual(await runsOf(inner, path, B, 8 * B), [[B, 4 * B, ExtentKind.Hole], [4 * B, 6 * B, ExtentKind.Unwritten], [6 * B, 8 * B, ExtentKind.Hole]]);
    await f.truncate(B); // at its size: frees the blocks past the end
    assert.deepEqual(await runsOf(inner, path, B, 8 * B), [[B, 8 * B, ExtentKind.Hole]]);
    await f[sync]();
    const r = await cut.powerCut();
    assert.equal(r.undoneMetadataChanges, sync === 'fsync' ? 0 : 1);
    const want: [number, number, number][] = sync === 'fsync' ? [[B, 8 * B, ExtentKind.Hole]] : [[B, 4 * B, ExtentKind.Hole], [4 * B, 6 * B, ExtentKind.Unwritten], [6 * B, 8 * B, ExtentKind.Hole]];
    assert.deepEqual(await runsOf(inner, path, B, 8 * B), want, `after ${sync}`);
    assert.ok((await contents(inner, path)).equals(blocks(1)), 'the size and bytes are as they were');
  }
});

test('uring: a truncate of a large sparse file remembers only its allocated blocks', { skip: testBackends()[0].skip }, async (t) => {
  const inner = testBackends()[0].make();
  t.after(() => inner.close());
  const path = join(tempDir(t), 'sparse');
  const TiB = 2 ** 40;
  const cut = new PowerCutIo(inner, undoAll);
  const f = await cut.open(path, { create: true });
  await f.truncate(TiB);
  await writeBlock(cut, f, TiB / 2 / B, 0x5a);
  await f.fsync();
  await f.truncate(0); // reading 1 TiB back would take minutes and exceed the model's limit
  await cut.powerCut();
  const g = await inner.open(path);
  t.after(() => g.close());
  assert.equal(await g.size(), TiB);
  const buf = inner.allocAligned(B);
  await g.pread(buf, TiB / 2);
  assert.ok(buf.every((x) => x === 0x5a), 'the block cut off came back');
  await g.pread(buf, TiB / 2 - B);
  assert.ok(buf.every((x) => x === 0));
});
