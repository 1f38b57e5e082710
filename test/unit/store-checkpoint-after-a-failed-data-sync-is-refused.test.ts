/**
 * A PG store whose data file fdatasync failed refuses every later checkpoint. Linux reports a
 * failed writeback once and marks the pages clean: the next fdatasync returns 0, and a
 * checkpoint retried then would record an index whose data never reached the disk (the WAL
 * would then drop the only copy). A restore, which replaces every data file, clears it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import { IoError } from '../../src/common/errors.js';
import type { BlockFile } from '../../src/io/types.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { openStore, openStoreForTest, WrappedBlockIo } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;

/**
 * Linux's buffered writeback failure: the first fdatasync after `armed` loses every write
 * since the last good sync (the pages marked clean, their content gone) and fails with EIO;
 * the next one returns 0.
 */
class LossyIo extends WrappedBlockIo {
  armed = false;
  protected wrapFile(f: BlockFile): Partial<BlockFile> {
    const io = this;
    const undo: { off: number; old: Buffer }[] = [];
    const remember = async (off: number, len: number): Promise<void> => {
      const old = io.inner.allocAligned(len);
      const n = await f.pread(old, off);
      old.fill(0, n);
      undo.push({ off, old });
    };
    const pwrite = async (b: Buffer, off: number, dsync?: boolean): Promise<void> => {
      await remember(off, b.length);
      return f.pwrite(b, off, dsync);
    };
    return {
      pwrite,
      pwritev: async (bs: readonly Buffer[], off: number, dsync?: boolean) => {
        const all = io.inner.allocAligned(bs.reduce((n, b) => n + b.length, 0));
        Buffer.concat(bs as Buffer[]).copy(all);
        return pwrite(all, off, dsync);
      },
      async fdatasync() {
        if (io.armed) {
          io.armed = false;
          for (const u of undo.reverse()) await f.pwrite(u.old, u.off);
          undo.length = 0;
          await f.fdatasync();
          throw new IoError('fdatasync', 5, 'fdatasync failed: EIO (writeback)');
        }
        undo.length = 0;
        return f.fdatasync();
      },
    };
  }
}

test('a PG store whose data file sync failed refuses every later checkpoint; its disk keeps the last good one', async (t) => {
  const dir = tempDir(t);
  const io = new LossyIo(new FsBlockIo());
  const s = await openStore(io, dir, { flushDelayMs: 0 });
  await s.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(B, 1)));
  assert.equal(await s.checkpoint(), 1);
  await s.apply(2, 1, encodeWrite(1, 0, Buffer.alloc(B, 2)));
  io.armed = true;
  await assert.rejects(s.checkpoint(), /EIO/);
  // The next fdatasync would return 0 with entry 2's block lost: the retry must not record 2.
  await assert.rejects(s.checkpoint(), /EIO/, 'a checkpoint retried after a failed sync');
  assert.equal(s.durableIndex, 1);
  await s.close();

  const r = await openStoreForTest(t, new FsBlockIo(), dir);
  assert.equal(r.appliedIndex, 1, 'the checkpoint names the last index whose data was synced: the WAL replays entry 2');
});

test('a restore replaces the data files whose sync failed: checkpoints are taken again after it', async (t) => {
  const io = new LossyIo(new FsBlockIo());
  const pool = new ScratchPool(io, { flushDelayMs: 0 });
  const s = await PgStore.open(io, pool, tempDir(t), 7);
  t.after(() => s.close());
  await s.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(B, 1)));
  io.armed = true;
  await assert.rejects(s.checkpoint(), /EIO/);

  const src = await PgStore.open(io, pool, tempDir(t), 7);
  t.after(() => src.close());
  for (let i = 1; i <= 5; i++) await src.apply(i, 1, encodeWrite(1, i * B, Buffer.alloc(B, i)));
  await s.beginRestore();
  await s.restoreChunk(await src.imageChunk(null, 1 << 20, 5));
  await s.finishRestore(5, 1);
  assert.equal(s.durableIndex, 5);
  await s.apply(6, 1, encodeWrite(1, 0, Buffer.alloc(B, 6)));
  assert.equal(await s.checkpoint(), 6);
});
