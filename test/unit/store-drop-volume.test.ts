/**
 * PgStore.dropVolume: a deleted volume's file is closed and unlinked, later commands for it
 * (still in the log, or replayed after a restart) change nothing and recreate nothing, the
 * applied index and request keys still advance as on every replica, and an operation in
 * flight on the file when it is dropped completes before the file is closed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FsBlockIo } from '../../src/io/fs.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import { tempDir } from '../helpers/tools.js';
import { WrappedBlockIo, openStore as openStoreOn } from '../helpers/block-io.js';
import type { BlockFile, OpenFileOptions } from '../../src/io/types.js';

async function openStore(dir: string): Promise<PgStore> {
  const io = new FsBlockIo();
  return PgStore.open(io, new ScratchPool(io), dir, 7);
}

test('a dropped volume loses its file and later commands for it recreate nothing', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(dir);
  await s.apply(1, 1, encodeWrite(5, 0, Buffer.alloc(8192, 0xaa), { session: 1, seq: 1 }));
  await s.apply(2, 1, encodeWrite(6, 0, Buffer.alloc(4096, 0xbb), { session: 1, seq: 2 }));
  assert.ok(existsSync(join(dir, 'vol-5.dat')));
  assert.equal(await s.dropVolume(5), true);
  assert.ok(!existsSync(join(dir, 'vol-5.dat')), 'the file is unlinked');
  assert.equal(await s.dropVolume(5), false, 'dropping twice changes nothing');
  // Commands for the dropped volume still in the log: applied (index moves), no data.
  await s.apply(3, 1, encodeWrite(5, 4096, Buffer.alloc(4096, 0xcc), { session: 1, seq: 3 }));
  await s.apply(4, 1, encodeRange(OpKind.ZeroNoHole, 5, 0, 65536, { session: 1, seq: 4 }));
  assert.equal(s.appliedIndex, 4);
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('vol-')), ['vol-6.dat']);
  const out = Buffer.alloc(8192, 0xee);
  await s.read(5, 0, 8192, out);
  assert.ok(out.equals(Buffer.alloc(8192)), 'a dropped volume reads as zeros');
  await s.read(6, 0, 4096, out);
  assert.ok(out.subarray(0, 4096).equals(Buffer.alloc(4096, 0xbb)), 'other volumes keep their data');
  assert.deepEqual(await s.blockStatus(5, 0, 8192), [{ length: 8192, hole: true, zero: true }]);
  await s.checkpoint();
  // A snapshot image has no trace of it.
  const chunk = await s.imageChunk(null, 1 << 20);
  assert.deepEqual([...new Set(chunk.runs.map((r) => r[0]))], [6]);
  await s.close();

  // After a restart the node drops it again before replaying: the replayed write does nothing.
  const again = await openStore(dir);
  assert.equal(await again.dropVolume(5), false, 'nothing left to drop');
  await again.apply(5, 1, encodeWrite(5, 0, Buffer.alloc(4096, 0xdd), { session: 1, seq: 5 }));
  assert.ok(!existsSync(join(dir, 'vol-5.dat')));
  await again.close();
});

test('a volume dropped while a read and a write are in flight on it: both finish, the file is gone', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(dir);
  const big = Buffer.alloc(4 << 20, 0x11);
  await s.apply(1, 1, encodeWrite(9, 0, big));
  const out = Buffer.alloc(4 << 20);
  const reading = s.read(9, 0, out.length, out);
  const writing = s.apply(2, 1, encodeWrite(9, 4 << 20, big));
  const dropping = s.dropVolume(9);
  await Promise.all([reading, writing, dropping]);
  assert.ok(!existsSync(join(dir, 'vol-9.dat')));
  assert.equal(s.appliedIndex, 2);
  await s.close();
});

test('a volume dropped while a command in flight makes one of its span files: that file goes too', async (t) => {
  const dir = tempDir(t);
  // The opening of the volume's second span file waits until the drop has unlinked the others.
  let releaseOpen!: () => void;
  const dropDone = new Promise<void>((resolve) => (releaseOpen = resolve));
  let spanOpenAsked = false;
  const io = new (class extends WrappedBlockIo {
    override async open(path: string, o?: OpenFileOptions): Promise<BlockFile> {
      if (path.endsWith('vol-9.s1.dat')) {
        spanOpenAsked = true;
        await dropDone;
      }
      return super.open(path, o);
    }
    protected wrapFile(): Partial<BlockFile> {
      return {};
    }
  })(new FsBlockIo());
  const s = await openStoreOn(io, dir);
  await s.apply(1, 1, encodeWrite(9, 0, Buffer.alloc(4096, 0x11)));
  // A zero that keeps its allocation, 17 TiB in: it makes the volume's second span file.
  const zeroing = s.apply(2, 1, encodeRange(OpKind.ZeroNoHole, 9, 17 * 2 ** 40, 65536));
  while (!spanOpenAsked) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(await s.dropVolume(9), true);
  releaseOpen();
  await zeroing;
  assert.equal(s.appliedIndex, 2);
  await s.close();
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('vol-')), [], 'no file of the dropped volume is left');
});
