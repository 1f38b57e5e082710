/**
 * WRITE_ZEROES with NO_HOLE (and a TRIM) on a filesystem that refuses the fallocate mode
 * (EOPNOTSUPP: tmpfs has no FALLOC_FL_ZERO_RANGE) writes zeros instead. Thrown, the error
 * stopped the node at the apply, and again at every restart that replayed the entry, on every
 * replica of the PG. The refusal is remembered: the store does not ask again at every apply.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import { IoError } from '../../src/common/errors.js';
import type { BlockFile, BlockIo } from '../../src/io/types.js';
import type { PgStore } from '../../src/store/pg-store.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { openStore, openStoreForTest, WrappedBlockIo, wrapBlockIo } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const EOPNOTSUPP = 95;

/** A BlockIo on a filesystem without FALLOC_FL_ZERO_RANGE (and, if asked, PUNCH_HOLE): it counts the refusals. */
class NoFallocateIo extends WrappedBlockIo {
  zeroRangeCalls = 0;
  punchCalls = 0;
  constructor(inner: BlockIo, readonly noPunch = false) {
    super(inner, 'uring');
  }
  protected wrapFile(f: BlockFile, path: string): Partial<BlockFile> {
    const refuse = (): Promise<void> => Promise.reject(new IoError('fallocate', EOPNOTSUPP, `fallocate ${path} failed: errno ${EOPNOTSUPP}`));
    return {
      zeroRange: () => {
        this.zeroRangeCalls++;
        return refuse();
      },
      punchHole: (at: number, len: number) => {
        this.punchCalls++;
        return this.noPunch ? refuse() : f.punchHole(at, len);
      },
    };
  }
}

async function readBlocks(s: PgStore, count: number): Promise<number[]> {
  const out = Buffer.alloc(count * B);
  await s.read(1, 0, out.length, out);
  return Array.from({ length: count }, (_, i) => {
    const block = out.subarray(i * B, (i + 1) * B);
    assert.ok(block.every((x) => x === block[0]), `block ${i} holds one byte value`);
    return block[0];
  });
}

test('WRITE_ZEROES with NO_HOLE writes zeros where the filesystem cannot zero a range, and asks it once', async (t) => {
  const dir = tempDir(t);
  const io = new NoFallocateIo(new FsBlockIo());
  const blocks = 300;
  const model = Buffer.alloc(blocks * B);
  // No flush round before a checkpoint: the first zeroing covers dirty blocks.
  const s = await openStore(io, dir, { flushDelayMs: 60_000 });
  const apply = (index: number, entry: Buffer): Promise<void> => s.apply(index, 1, entry);
  await apply(1, encodeWrite(1, 0, Buffer.alloc(8 * B, 0xab)));
  model.fill(0xab, 0, 8 * B);
  await apply(2, encodeRange(OpKind.ZeroNoHole, 1, B, 2 * B));
  model.fill(0, B, 3 * B);
  assert.deepEqual(await readBlocks(s, 8), [0xab, 0, 0, 0xab, 0xab, 0xab, 0xab, 0xab]);
  assert.equal(await s.checkpoint(), 2);
  await apply(3, encodeWrite(1, 8 * B, Buffer.alloc((blocks - 8) * B, 0xcd)));
  model.fill(0xcd, 8 * B);
  assert.equal(await s.checkpoint(), 3);
  // Nothing dirty now: the zeros go straight to the file, more than the one chunk of zeros
  // (1 MiB) at a time, with a partial block at each end.
  const from = 9 * B + 100;
  const length = 270 * B;
  await apply(4, encodeRange(OpKind.ZeroNoHole, 1, from, length));
  model.fill(0, from, from + length);
  const out = Buffer.alloc(model.length);
  await s.read(1, 0, out.length, out);
  assert.ok(out.equals(model), 'the store reads as the model');
  assert.equal(io.zeroRangeCalls, 1, 'the refused mode is asked for again');
  assert.equal(await s.checkpoint(), 4);
  await s.close();

  // The zeros are in the file.
  const r = await openStoreForTest(t, new FsBlockIo(), dir);
  out.fill(0x11);
  await r.read(1, 0, out.length, out);
  assert.ok(out.equals(model), 'the file reads as the model');
});

test('a TRIM writes zeros where the filesystem cannot punch a hole, and asks it once', async (t) => {
  const io = new NoFallocateIo(new FsBlockIo(), true);
  const s = await openStoreForTest(t, io, tempDir(t), { flushDelayMs: 0 });
  await s.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(4 * B, 0xcd)));
  await s.apply(2, 1, encodeRange(OpKind.Trim, 1, 0, 2 * B));
  await s.apply(3, 1, encodeRange(OpKind.Zero, 1, 3 * B, B));
  assert.deepEqual(await readBlocks(s, 4), [0, 0, 0xcd, 0]);
  assert.equal(io.punchCalls, 1);
  assert.equal(io.zeroRangeCalls, 0);
});

test('another fallocate error still fails the apply', async (t) => {
  const io = wrapBlockIo(new FsBlockIo(), () => ({ zeroRange: () => Promise.reject(new IoError('fallocate', 28, 'ENOSPC')) }));
  const s = await openStoreForTest(t, io, tempDir(t));
  await assert.rejects(s.apply(1, 1, encodeRange(OpKind.ZeroNoHole, 1, 0, 2 * B)), { code: 'IO_ERROR' });
});
