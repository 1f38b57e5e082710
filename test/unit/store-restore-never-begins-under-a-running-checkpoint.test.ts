/**
 * A PG store refuses to begin a snapshot restore while one of its checkpoints runs: that
 * checkpoint took the applied index from before the restore, and finishing after it would
 * record that older index over the image's (the host orders them: installSnapshot waits for
 * the group's checkpoint). Refused, not silently raced: the refusal stops the node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsBlockIo } from '../../src/io/fs.js';
import type { BlockFile, BlockIo, OpenFileOptions } from '../../src/io/types.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeWrite } from '../../src/store/ops.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;

/** A BlockIo whose next fdatasync completes at once but is answered only when `gate` settles (a slow device). */
class GatedIo implements BlockIo {
  readonly kind = 'fs' as const;
  readonly alignmentBytes = 4096;
  gate: Promise<void> | null = null;
  constructor(readonly inner: BlockIo) {}
  allocAligned(n: number): Buffer {
    return this.inner.allocAligned(n);
  }
  async close(): Promise<void> {}
  async open(path: string, o?: OpenFileOptions): Promise<BlockFile> {
    const f = await this.inner.open(path, o);
    const io = this;
    return Object.assign(Object.create(f) as BlockFile, {
      path,
      direct: f.direct,
      async fdatasync() {
        await f.fdatasync();
        const g = io.gate;
        io.gate = null;
        if (g) await g;
      },
    });
  }
}

test('a store refuses to begin a restore under a running checkpoint, and restores once it ended', async (t) => {
  const fs = new FsBlockIo();
  const leader = await PgStore.open(fs, new ScratchPool(fs), tempDir(t), 7);
  t.after(() => leader.close());
  for (let i = 1; i <= 10; i++) await leader.apply(i, 1, encodeWrite(1, i * B, Buffer.alloc(B, i), { session: 1, seq: i }));
  const chunk = await leader.imageChunk(null, 64 << 20, 10);

  const io = new GatedIo(new FsBlockIo());
  const s = await PgStore.open(io, new ScratchPool(io), tempDir(t), 7);
  t.after(() => s.close());
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
