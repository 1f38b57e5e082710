/**
 * A PG store refuses to begin a snapshot restore while one of its checkpoints runs: that
 * checkpoint took the applied index from before the restore, and finishing after it would
 * record that older index over the image's (the host orders them: installSnapshot waits for
 * the group's checkpoint). Refused, not silently raced: the refusal stops the node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import type { BlockFile } from '../../src/io/types.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStoreForTest, WrappedBlockIo } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;

/** A BlockIo whose next fdatasync completes at once but is answered only when `gate` settles (a slow device). */
class GatedIo extends WrappedBlockIo {
  gate: Promise<void> | null = null;
  protected wrapFile(f: BlockFile): Partial<BlockFile> {
    return {
      fdatasync: async () => {
        await f.fdatasync();
        const g = this.gate;
        this.gate = null;
        if (g) await g;
      },
    };
  }
}

test('a store refuses to begin a restore under a running checkpoint, and restores once it ended', async (t) => {
  const fs = new FsBlockIo();
  const leader = await openStoreForTest(t, fs, tempDir(t));
  for (let i = 1; i <= 10; i++) await leader.apply(i, 1, encodeWrite(1, i * B, Buffer.alloc(B, i), { session: 1, seq: i }));
  const chunk = await leader.imageChunk(null, 64 << 20, 10);

  const io = new GatedIo(new FsBlockIo());
  const s = await openStoreForTest(t, io, tempDir(t));
  for (let i = 1; i <= 3; i++) await s.apply(i, 1, encodeWrite(1, i * B, Buffer.alloc(B, i), { session: 1, seq: i }));
  let release!: () => void;
  io.gate = new Promise((r) => (release = r));
  t.after(() => release());
  const checkpoint = s.checkpoint();
  await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(s.beginRestore(), { code: 'ASSERTION_FAILED' });
  release();
  assert.equal(await checkpoint, 3);

  await s.beginRestore();
  await s.restoreChunk(chunk);
  await s.finishRestore(10, 1);
  assert.equal(s.durableIndex, 10);
  const out = Buffer.alloc(B);
  await s.read(1, 10 * B, B, out);
  assert.equal(out[0], 10);
});
