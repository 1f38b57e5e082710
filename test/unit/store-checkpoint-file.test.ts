/**
 * A PG replica's checkpoint file (src/store/checkpoint-file.ts): index, term and dedupe window
 * in one record that reads back exactly, refuses every damaged form as Corruption, and takes
 * over from the two files older versions kept (meta.json, dedupe.bin).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { checkpointFileName, decodeCheckpoint, encodeCheckpoint, readCheckpoint } from '../../src/store/checkpoint-file.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { RecentRequests } from '../../src/store/recent-requests.js';
import { encodeWrite } from '../../src/store/ops.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { Corruption } from '../../src/common/errors.js';
import { tempDir } from '../helpers/tools.js';

const windowOf = (keys: number[]): Buffer => {
  const r = new RecentRequests(64);
  for (const k of keys) r.remember(k);
  return r.toBytes();
};

test('a checkpoint reads back as written', () => {
  fc.assert(
    fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.array(fc.integer({ min: 1, max: 2 ** 52 }), { maxLength: 64 }), (appliedIndex, appliedTerm, keys) => {
      const recent = windowOf(keys);
      const back = decodeCheckpoint(encodeCheckpoint({ appliedIndex, appliedTerm, recent }), 'test');
      assert.equal(back.appliedIndex, appliedIndex);
      assert.equal(back.appliedTerm, appliedTerm);
      assert.deepEqual(Buffer.from(back.recent), recent);
    }),
  );
});

test('a damaged checkpoint is Corruption: any flipped byte, a cut, a byte too many, another format', () => {
  const good = encodeCheckpoint({ appliedIndex: 1234, appliedTerm: 5, recent: windowOf([7, 8, 9]) });
  fc.assert(
    fc.property(fc.nat({ max: good.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, flip) => {
      const bad = Buffer.from(good);
      bad[at] ^= flip;
      assert.throws(() => decodeCheckpoint(bad, 'test'), Corruption);
    }),
  );
  for (let len = 0; len < good.length; len += 7) assert.throws(() => decodeCheckpoint(good.subarray(0, len), 'test'), Corruption);
  assert.throws(() => decodeCheckpoint(Buffer.concat([good, Buffer.from([0])]), 'test'), Corruption);
  const v2 = Buffer.from(good);
  v2.writeUInt32BE(2, 4);
  assert.throws(() => decodeCheckpoint(v2, 'test'), /checkpoint format 2/);
});

test('a store of an older version (meta.json, dedupe.bin) opens at its index with its window, and its next checkpoint replaces both files', async (t) => {
  const dir = tempDir(t);
  const id = { session: 41, seq: 9 };
  const retried = encodeWrite(1, 0, Buffer.alloc(4096, 0xaa), id);
  // What an older version left: index 3, term 2, the request above in the window.
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ appliedIndex: 3, appliedTerm: 2 }));
  const r = new RecentRequests(16);
  r.remember(id.session * 2 ** 32 + id.seq);
  writeFileSync(join(dir, 'dedupe.bin'), r.toBytes());
  const io = new FsBlockIo();
  const s = await PgStore.open(io, new ScratchPool(io), dir, 7);
  t.after(() => s.close());
  assert.equal(s.appliedIndex, 3);
  assert.equal(s.appliedTerm, 2);
  assert.equal(s.durableIndex, 3);
  // The retried request is known: applying it again changes nothing.
  await s.apply(4, 2, retried);
  const out = Buffer.alloc(4096, 0xee);
  await s.read(1, 0, 4096, out);
  assert.ok(out.every((b) => b === 0), 'a request in the window was applied twice');

  assert.equal(await s.checkpoint(), 4);
  assert.ok(existsSync(join(dir, checkpointFileName)));
  assert.ok(!existsSync(join(dir, 'meta.json')) && !existsSync(join(dir, 'dedupe.bin')), 'the older files stay beside checkpoint.bin');
  const ckpt = await readCheckpoint(dir);
  assert.deepEqual([ckpt.appliedIndex, ckpt.appliedTerm, ckpt.legacy], [4, 2, false]);
  assert.deepEqual(Buffer.from(ckpt.recent), r.toBytes());
});

test('checkpoint.bin wins over older files left beside it, and a damaged one stops the open', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ appliedIndex: 99, appliedTerm: 9 }));
  writeFileSync(join(dir, checkpointFileName), encodeCheckpoint({ appliedIndex: 5, appliedTerm: 1, recent: Buffer.alloc(0) }));
  assert.equal((await readCheckpoint(dir)).appliedIndex, 5);
  const bytes = readFileSync(join(dir, checkpointFileName));
  bytes[10] ^= 1;
  writeFileSync(join(dir, checkpointFileName), bytes);
  const io = new FsBlockIo();
  await assert.rejects(PgStore.open(io, new ScratchPool(io), dir, 7), Corruption);
  // No checkpoint at all: a new store.
  const fresh = await readCheckpoint(tempDir(t));
  assert.deepEqual([fresh.appliedIndex, fresh.appliedTerm, fresh.recent.byteLength, fresh.legacy], [0, 0, 0, false]);
});
