/**
 * A write-behind flush that fails is reported to the store's owner at once (the node-wide
 * budget's onFailure, which a node wires to stopping itself), not only at the store's next
 * apply or checkpoint: a PG that goes idle after a write makes neither for a long time, while
 * its blocks live only in memory and the node-wide dirty cap is off for every store.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import { IoError } from '../../src/common/errors.js';
import type { BlockFile } from '../../src/io/types.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { WrappedBlockIo } from '../helpers/block-io.js';
import { tempDir } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

const B = 4096;

/** A BlockIo whose data writes fail with EIO once `broken`. */
class BrokenWritesIo extends WrappedBlockIo {
  broken = false;
  protected wrapFile(f: BlockFile, path: string): Partial<BlockFile> {
    const eio = (syscall: string): IoError => new IoError(syscall, 5, `${syscall} ${path} failed: EIO`);
    return {
      pwrite: (b: Buffer, at: number, dsync?: boolean) => (this.broken ? Promise.reject(eio('pwrite')) : f.pwrite(b, at, dsync)),
      pwritev: (bs: readonly Buffer[], at: number, dsync?: boolean) => (this.broken ? Promise.reject(eio('pwritev')) : f.pwritev(bs, at, dsync)),
    };
  }
}

test("a failed write-behind flush reaches the store's owner at once, with no apply or checkpoint after it", async (t) => {
  const io = new BrokenWritesIo(new FsBlockIo());
  const failures: Error[] = [];
  const pool = new ScratchPool(io, { onFailure: (err) => failures.push(err) });
  const s = await PgStore.open(io, pool, tempDir(t), 7);
  t.after(() => s.close());
  await s.apply(1, 1, encodeWrite(1, 0, Buffer.alloc(B, 1)));
  assert.equal(await s.checkpoint(), 1);
  io.broken = true;
  await s.apply(2, 1, encodeWrite(1, 0, Buffer.alloc(2 * B, 2)));
  // The PG goes idle: only the node-wide flush round (20 ms) writes its blocks.
  await until(() => failures.length > 0, 2000, 'the flush failure reported');
  assert.equal(failures.length, 1);
  assert.ok(failures[0] instanceof IoError && failures[0].code === 'IO_ERROR', `reported ${String(failures[0])}`);
  assert.equal(pool.writeBehind.failed, true);
  // The store itself refuses what comes next, as before.
  await assert.rejects(s.apply(3, 1, encodeWrite(1, 0, Buffer.alloc(B, 4))), { code: 'IO_ERROR' });
  await assert.rejects(s.checkpoint(), { code: 'IO_ERROR' });
});
