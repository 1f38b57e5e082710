/**
 * BLOCK_STATUS answers from the extent map of a file whose blocks are, at random, data, holes
 * and unwritten extents (FALLOC_FL_ZERO_RANGE; what SEEK_DATA calls holes and FIEMAP tells
 * apart): asked again from where each reply ends, the answers put together are the layout,
 * block for block (data; HOLE|ZERO; ZERO without HOLE), for the file export and for a PG store.
 * More runs than one reply carries (1024 for the export, 4096 for a store): each reply is cut
 * at that many extents and the next one goes on where it ended. Through FIEMAP asked a batch of
 * extents at a time over the request's range, where it was once asked per hole.
 *
 * Real files on a real disk, made with O_DIRECT (no cached pages for SEEK_DATA to count).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { seededRandom } from '../../src/io/powercut.js';
import { testBackends } from '../../src/io/testing.js';
import type { BlockIo } from '../../src/io/types.js';
import type { BlockExtent } from '../../src/nbd/backend.js';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStore } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const blocks = 24_576; // 96 MiB
const uring = testBackends()[0];

type Kind = 'data' | 'hole' | 'unwritten';
const flagsOf: Record<Kind, { hole: boolean; zero: boolean }> = {
  data: { hole: false, zero: false },
  hole: { hole: true, zero: true },
  unwritten: { hole: false, zero: true },
};

interface Span {
  offset: number;
  length: number;
  hole: boolean;
  zero: boolean;
}

/** Runs of 1 to 3 blocks of a random kind (neighbours of a kind joined), from `seed`. */
function layout(seed: number): { kind: Kind; from: number; to: number }[] {
  const rnd = seededRandom(seed);
  const kinds: Kind[] = ['data', 'hole', 'unwritten'];
  const runs: { kind: Kind; from: number; to: number }[] = [];
  for (let blk = 0; blk < blocks; ) {
    const kind = kinds[Math.floor(rnd() * 3)];
    const to = Math.min(blocks, blk + 1 + Math.floor(rnd() * 3));
    const last = runs[runs.length - 1];
    if (last && last.kind === kind) last.to = to;
    else runs.push({ kind, from: blk, to });
    blk = to;
  }
  return runs;
}

/** Writes the layout into `path` (which may hold anything of its first block). */
async function makeFile(io: BlockIo, path: string, runs: { kind: Kind; from: number; to: number }[]): Promise<void> {
  const f = await io.open(path, { create: true });
  try {
    await f.punchHole(0, B);
    await f.truncate(blocks * B);
    const longest = Math.max(...runs.map((r) => r.to - r.from));
    const data = io.allocAligned(longest * B).fill(0x6b);
    const inFlight: Promise<void>[] = [];
    for (const r of runs) {
      const len = (r.to - r.from) * B;
      if (r.kind === 'data') inFlight.push(f.pwrite(data.subarray(0, len), r.from * B));
      else if (r.kind === 'unwritten') inFlight.push(f.zeroRange(r.from * B, len));
      if (inFlight.length >= 256) await Promise.all(inFlight.splice(0));
    }
    await Promise.all(inFlight);
    await f.fdatasync();
  } finally {
    await f.close();
  }
}

function expected(runs: { kind: Kind; from: number; to: number }[]): Span[] {
  return runs.map((r) => ({ offset: r.from * B, length: (r.to - r.from) * B, ...flagsOf[r.kind] }));
}

/**
 * The whole range's flags from `ask`, asked again where a reply ends; every reply at most
 * `maxExtents` extents. Returns the spans and how many replies it took.
 */
async function statusOf(ask: (offset: number, length: number) => Promise<BlockExtent[]>, length: number, maxExtents: number): Promise<{ spans: Span[]; replies: number }> {
  const spans: Span[] = [];
  let replies = 0;
  for (let pos = 0; pos < length; ) {
    const ext = await ask(pos, length - pos);
    replies++;
    assert.ok(ext.length > 0 && ext.length <= maxExtents, `a reply of ${ext.length} extents (at most ${maxExtents})`);
    for (const e of ext) {
      assert.ok(e.length > 0 && pos + e.length <= length, `extent [${pos}, +${e.length}) within the range`);
      const last = spans[spans.length - 1];
      if (last && last.hole === e.hole && last.zero === e.zero) last.length += e.length;
      else spans.push({ offset: pos, length: e.length, hole: e.hole, zero: e.zero });
      pos += e.length;
    }
  }
  return { spans, replies };
}

test('file export: BLOCK_STATUS tells data, holes and unwritten extents as laid out, reply after reply', { skip: uring.skip }, async (t) => {
  const io = uring.make();
  t.after(() => io.close());
  const runs = layout(1);
  assert.ok(runs.length > 4 * 1024, `${runs.length} runs: several replies' worth`);
  const path = join(tempDir(t), 'layout.img');
  await makeFile(io, path, runs);
  const b = await FileBackend.open(path);
  t.after(() => b.close());
  assert.equal(b.sparseMode.kind, 'native');
  const { spans, replies } = await statusOf((o, l) => b.blockStatus(o, l), blocks * B, 1024);
  assert.deepEqual(spans, expected(runs));
  assert.ok(replies >= 4, `${replies} replies`);
  // From an unaligned offset to an unaligned end: clipped to the bytes asked.
  const mid = runs[Math.floor(runs.length / 2)];
  const from = mid.from * B + 100;
  const got = await b.blockStatus(from, 3 * B);
  assert.equal(got.reduce((n, e) => n + e.length, 0), 3 * B);
  assert.deepEqual({ hole: got[0].hole, zero: got[0].zero }, flagsOf[mid.kind]);
});

test('PG store: block status tells data, holes and unwritten extents as laid out, reply after reply', { skip: uring.skip }, async (t) => {
  const io = uring.make();
  t.after(() => io.close());
  const dir = tempDir(t);
  const runs = layout(2);
  assert.ok(runs.length > 2 * 4096, `${runs.length} runs: several replies' worth`);
  // The store makes the volume's data file; its layout is then made underneath, store closed.
  let store = await openStore(io, dir);
  await store.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(B, 0x11), { session: 1, seq: 1 }));
  await store.checkpoint();
  await store.close();
  await makeFile(io, join(dir, 'vol-1.dat'), runs);
  store = await openStore(io, dir);
  t.after(() => store.close());
  const { spans, replies } = await statusOf((o, l) => store.blockStatus(1, o, l), blocks * B, 4096);
  assert.deepEqual(spans, expected(runs));
  assert.ok(replies >= 2, `${replies} replies`);
});
