import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { FsBlockIo } from '../../src/io/fs.js';
import { PowerCutIo } from '../../src/io/powercut.js';
import { until } from '../helpers/until.js';
import { testBackends } from '../../src/io/testing.js';
import type { BlockIo } from '../../src/io/types.js';
import { PgStore, ScratchPool } from '../../src/store/pg-store.js';
import { encodeRange, encodeWrite, OpKind } from '../../src/store/ops.js';
import type { WriteBehindOptions } from '../../src/store/write-behind.js';
import { tempDir } from '../helpers/tools.js';

const B = 4096;
const volBlocks = 48;
const volBytes = volBlocks * B;
const vols = [1, 2];
/** Tiny limits: flushes start after a few blocks or soon, and run while reads are in flight. */
const optionsArb = fc.record({
  flushDelayMs: fc.constantFrom(0, 2, 1000),
  flushBytes: fc.constantFrom(2 * B, 16 * B),
  storeLimitBytes: fc.constantFrom(8 * B, 32 * B),
});

/** Deterministic bytes for the n-th write (every write's data differs from every other's). */
function pattern(n: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (n * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

type Cmd =
  | { k: 'write'; vol: number; off: number; len: number }
  | { k: 'trim' | 'zero' | 'zeroNoHole'; vol: number; off: number; len: number }
  | { k: 'read'; vol: number; off: number; len: number }
  | { k: 'readConcurrent'; vol: number; off: number; len: number; delay: number }
  | { k: 'status'; vol: number; off: number; len: number }
  | { k: 'checkpoint' }
  | { k: 'reopen' };

const range = (maxLen: number) =>
  fc
    .record({ vol: fc.constantFrom(...vols), off: fc.integer({ min: 0, max: volBytes - 1 }), len: fc.integer({ min: 1, max: maxLen }), aligned: fc.boolean() })
    .map(({ vol, off, len, aligned }) => {
      let o = aligned ? off - (off % B) : off;
      let l = aligned ? Math.ceil(len / B) * B : len;
      if (o + l > volBytes) l = volBytes - o;
      if (l <= 0) {
        o = 0;
        l = B;
      }
      return { vol, off: o, len: l };
    });

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 8, arbitrary: range(3 * B + 100).map((r) => ({ k: 'write' as const, ...r })) },
  { weight: 1, arbitrary: range(20 * B).map((r) => ({ k: 'write' as const, ...r })) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('trim' as const, 'zero' as const, 'zeroNoHole' as const), range(16 * B)).map(([k, r]) => ({ k, ...r })) },
  { weight: 3, arbitrary: range(8 * B).map((r) => ({ k: 'read' as const, ...r })) },
  { weight: 4, arbitrary: fc.tuple(range(8 * B), fc.integer({ min: 0, max: 5 })).map(([r, delay]) => ({ k: 'readConcurrent' as const, ...r, delay })) },
  { weight: 1, arbitrary: range(volBytes).map((r) => ({ k: 'status' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant<Cmd>({ k: 'checkpoint' }) },
  { weight: 1, arbitrary: fc.constant<Cmd>({ k: 'reopen' }) },
);

interface PendingRead {
  done: Promise<void>;
  out: Buffer;
  vol: number;
  off: number;
  len: number;
  /** The range's content in the model when the read started, then after every later apply. */
  versions: Buffer[];
}

/** Every block of a concurrent read holds one of the versions the model had while it ran. */
function checkConcurrentRead(r: PendingRead): void {
  for (let at = r.off; at < r.off + r.len; ) {
    const blockEnd = Math.min(r.off + r.len, (Math.floor(at / B) + 1) * B);
    const got = r.out.subarray(at - r.off, blockEnd - r.off);
    const ok = r.versions.some((v) => v.subarray(at - r.off, blockEnd - r.off).equals(got));
    assert.ok(ok, `read of vol ${r.vol} [${r.off}, +${r.len}) returned, at ${at}, bytes no version between its start and end had`);
    at = blockEnd;
  }
}

/** 0: at once; 1-2: after that many microtask hops; 3: next turn; 4-5: after a timer. */
async function afterDelay(delay: number): Promise<void> {
  if (delay === 0) return;
  if (delay <= 2) {
    for (let i = 0; i < delay * 3; i++) await Promise.resolve();
    return;
  }
  await new Promise((r) => (delay === 3 ? setImmediate(r) : setTimeout(r, delay - 3)));
}

async function runSequence(io: BlockIo, dir: string, options: WriteBehindOptions & { flushDelayMs: number }, cmds: Cmd[]): Promise<void> {
  // A node limit this small makes applies wait too.
  const scratch = new ScratchPool(io, { nodeDirtyLimitBytes: 16 * B, flushDelayMs: options.flushDelayMs });
  const eager: WriteBehindOptions = { flushBytes: options.flushBytes, storeLimitBytes: options.storeLimitBytes };
  let s = await PgStore.open(io, scratch, dir, 7, eager);
  const model = new Map(vols.map((v) => [v, Buffer.alloc(volBytes)]));
  let index = 0;
  let checkpointed = 0;
  /** Every entry applied, as the WAL would keep it (index i at i - 1). */
  const log: Buffer[] = [];
  const apply = async (entry: Buffer): Promise<void> => {
    log.push(entry);
    await s.apply(++index, 1, entry);
  };
  let writes = 0;
  let pending: PendingRead[] = [];
  const settle = async (): Promise<void> => {
    for (const r of pending) {
      await r.done;
      checkConcurrentRead(r);
    }
    pending = [];
  };
  try {
    for (const c of cmds) {
      switch (c.k) {
        case 'write': {
          const data = pattern(++writes, c.len);
          await apply(encodeWrite(c.vol, c.off, data));
          data.copy(model.get(c.vol)!, c.off);
          break;
        }
        case 'trim':
        case 'zero':
        case 'zeroNoHole': {
          const kind = c.k === 'trim' ? OpKind.Trim : c.k === 'zero' ? OpKind.Zero : OpKind.ZeroNoHole;
          await apply(encodeRange(kind, c.vol, c.off, c.len));
          model.get(c.vol)!.fill(0, c.off, c.off + c.len);
          break;
        }
        case 'read': {
          const out = Buffer.alloc(c.len, 0xee);
          await s.read(c.vol, c.off, c.len, out);
          assert.ok(out.equals(model.get(c.vol)!.subarray(c.off, c.off + c.len)), `read of vol ${c.vol} [${c.off}, +${c.len}) after ${index} entries`);
          break;
        }
        case 'readConcurrent': {
          // The read starts now or later, in the middle of the commands that follow (their
          // applies, punches and flushes); its first version is the model when it starts.
          const out = Buffer.alloc(c.len, 0xee);
          const r: PendingRead = { done: Promise.resolve(), out, vol: c.vol, off: c.off, len: c.len, versions: [] };
          const store = s;
          const start = (): Promise<void> => {
            r.versions.push(Buffer.from(model.get(c.vol)!.subarray(c.off, c.off + c.len)));
            return store.read(c.vol, c.off, c.len, out);
          };
          r.done = afterDelay(c.delay).then(start);
          pending.push(r);
          break;
        }
        case 'status': {
          const extents = await s.blockStatus(c.vol, c.off, c.len);
          assert.equal(extents.reduce((n, e) => n + e.length, 0), c.len, 'status covers the range');
          let at = c.off;
          for (const e of extents) {
            // A hole, or allocated zeros, must read as zeros: applied (even unflushed) data is
            // never reported as either (clients skip reading what is reported zero).
            if (e.hole || e.zero) assert.ok(model.get(c.vol)!.subarray(at, at + e.length).every((b) => b === 0), `status reports ${e.hole ? 'a hole' : 'zeros'} at ${at} over data`);
            at += e.length;
          }
          break;
        }
        case 'checkpoint':
          await settle();
          assert.equal(await s.checkpoint(), index);
          assert.equal(s.durableIndex, index);
          checkpointed = index;
          break;
        case 'reopen':
          await settle();
          await s.close();
          s = await PgStore.open(io, scratch, dir, 7, eager);
          // A restart resumes from the checkpoint; the log replays the rest over newer data.
          assert.equal(s.appliedIndex, checkpointed);
          for (let i = checkpointed + 1; i <= index; i++) await s.apply(i, 1, log[i - 1]);
          break;
      }
      if (c.k === 'write' || c.k === 'trim' || c.k === 'zero' || c.k === 'zeroNoHole') {
        for (const r of pending) if (r.versions.length > 0) r.versions.push(Buffer.from(model.get(r.vol)!.subarray(r.off, r.off + r.len)));
      }
      if (pending.length > 4) await settle();
    }
    await settle();
    for (const v of vols) {
      const out = Buffer.alloc(volBytes, 0xee);
      await s.read(v, 0, volBytes, out);
      assert.ok(out.equals(model.get(v)!), `final content of vol ${v}`);
    }
    // And the same from the files alone, after a checkpoint.
    await s.checkpoint();
    await s.close();
    s = await PgStore.open(io, scratch, dir, 7, eager);
    for (const v of vols) {
      const out = Buffer.alloc(volBytes, 0xee);
      await s.read(v, 0, volBytes, out);
      assert.ok(out.equals(model.get(v)!), `content of vol ${v} after reopen`);
    }
    assert.equal(scratch.writeBehind.bytes, 0, 'a closed store holds no dirty bytes');
  } finally {
    await s.close();
  }
}

for (const backend of testBackends()) {
  test(`write-behind store (${backend.name}): random writes, trims, zeroes, reads (also concurrent with flushes), checkpoints and reopens match a model`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const base = tempDir(t);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(optionsArb, fc.array(cmdArb, { minLength: 1, maxLength: 60 }), async (options, cmds) => {
        await runSequence(io, join(base, String(run++)), options, cmds);
      }),
      { numRuns: 40 },
    );
  });
}

test('write-behind store: overwrites of a dirty block coalesce, and the newest version wins on disk', async (t) => {
  const io = new FsBlockIo();
  const dir = tempDir(t);
  const s = await PgStore.open(io, new ScratchPool(io, { flushDelayMs: 60_000 }), dir, 7);
  for (let i = 1; i <= 50; i++) await s.apply(i, 1, encodeWrite(1, 0, Buffer.alloc(B, i)));
  // Nothing was written yet (the flush is far away): the data file is empty.
  assert.equal(readFileSync(join(dir, 'vol-1.dat')).length, 0, 'applies did not write the data file');
  const out = Buffer.alloc(B);
  await s.read(1, 0, B, out);
  assert.ok(out.equals(Buffer.alloc(B, 50)), 'reads see the newest dirty version');
  assert.deepEqual(await s.blockStatus(1, 0, 2 * B), [
    { length: B, hole: false, zero: false },
    { length: B, hole: true, zero: true },
  ]);
  assert.equal(await s.checkpoint(), 50);
  assert.ok(readFileSync(join(dir, 'vol-1.dat')).equals(Buffer.alloc(B, 50)), 'checkpoint wrote the newest version');
  await s.close();
});

test('write-behind store: a crash after a checkpoint leaves exactly the checkpointed data; replaying the log restores the rest', async (t) => {
  const dir = tempDir(t);
  // Every write not covered by an fdatasync is rolled back at the cut (the harshest disk).
  const cutIo = new PowerCutIo(new FsBlockIo(), () => 0.9);
  const s = await PgStore.open(cutIo, new ScratchPool(cutIo, { flushDelayMs: 0 }), dir, 7, { flushBytes: 2 * B });
  const model = Buffer.alloc(volBytes);
  const entries: Buffer[] = [];
  const applyAll = async (cmds: Buffer[]): Promise<void> => {
    for (const e of cmds) {
      entries.push(e);
      await s.apply(entries.length, 1, e);
    }
  };
  const w = (block: number, blocks: number, n: number): Buffer => {
    const data = pattern(n, blocks * B + (n % 3) * 100);
    const off = block * B + (n % 2) * 700;
    data.copy(model, off);
    return encodeWrite(1, off, data);
  };
  const trim = (block: number, blocks: number): Buffer => {
    model.fill(0, block * B, (block + blocks) * B);
    return encodeRange(OpKind.Trim, 1, block * B, blocks * B);
  };
  await applyAll([w(0, 4, 1), w(10, 2, 2), w(20, 8, 3), trim(22, 2), w(40, 1, 4), w(3, 2, 5)]);
  assert.equal(await s.checkpoint(), 6);
  const checkpointed = Buffer.from(model);
  await applyAll([w(1, 3, 6), trim(10, 2), w(24, 6, 7), w(45, 2, 8), w(0, 1, 9), trim(40, 1)]);
  // Flushes of the later entries land (unsynced) before the cut.
  const reachedFile = (): boolean => {
    const onDisk = readFileSync(join(dir, 'vol-1.dat'));
    return !onDisk.subarray(0, volBytes).equals(checkpointed.subarray(0, onDisk.length));
  };
  await until(reachedFile, 10_000, 'later applies reaching the data file before the cut');
  await cutIo.powerCut();

  const io = new FsBlockIo();
  const r = await PgStore.open(io, new ScratchPool(io), dir, 7);
  assert.equal(r.appliedIndex, 6);
  const out = Buffer.alloc(volBytes);
  await r.read(1, 0, volBytes, out);
  assert.ok(out.equals(checkpointed), 'the store holds exactly the checkpointed state');
  for (let i = 7; i <= entries.length; i++) await r.apply(i, 1, entries[i - 1]);
  await r.read(1, 0, volBytes, out);
  assert.ok(out.equals(model), 'replaying the entries after the checkpoint restores every write');
  await r.close();
});

for (const backend of testBackends()) {
  test(`write-behind store (${backend.name}): reads during a trim of dirty blocks never return data older than the trimmed write`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const s = await PgStore.open(io, new ScratchPool(io, { flushDelayMs: 60_000 }), tempDir(t), 7);
    const blocks = 64;
    let index = 0;
    for (let round = 1; round <= 10; round++) {
      const old = Buffer.alloc(blocks * B, round);
      await s.apply(++index, 1, encodeWrite(1, 0, old));
      await s.checkpoint(); // `old` is on disk
      const newer = Buffer.alloc(blocks * B, 100 + round);
      await s.apply(++index, 1, encodeWrite(1, 0, newer)); // dirty
      const reads: Promise<void>[] = [];
      const outs: Buffer[] = [];
      let trimmed = false;
      const trim = s.apply(++index, 1, encodeRange(round % 2 ? OpKind.Trim : OpKind.ZeroNoHole, 1, 0, blocks * B)).then(() => {
        trimmed = true;
      });
      // Reads starting at every step of the trim (microtasks, then turns, until it is done).
      for (let hop = 0; !trimmed && hop < 10_000; hop++) {
        const out = Buffer.alloc(blocks * B, 0xee);
        outs.push(out);
        reads.push(s.read(1, 0, blocks * B, out));
        if (hop < 20) await Promise.resolve();
        else await new Promise((r) => setImmediate(r));
      }
      await trim;
      await Promise.all(reads);
      for (const out of outs) {
        for (let at = 0; at < out.length; at += B) {
          const v = out[at];
          assert.ok((v === 100 + round || v === 0) && out.subarray(at, at + B).every((x) => x === v), `round ${round}: a read during the trim returned ${v} at ${at}`);
        }
      }
      const after = Buffer.alloc(blocks * B, 0xee);
      await s.read(1, 0, blocks * B, after);
      assert.ok(after.equals(Buffer.alloc(blocks * B)), 'zeros after the trim');
    }
    await s.close();
  });
}

for (const backend of testBackends()) {
  test(`write-behind store (${backend.name}): a block rewritten while its flush is in flight keeps every block's newest data`, { skip: backend.skip }, async (t) => {
    const io = backend.make();
    t.after(() => io.close());
    const dir = tempDir(t);
    const s = await PgStore.open(io, new ScratchPool(io, { flushDelayMs: 0 }), dir, 7, { flushBytes: B });
    const model = Buffer.alloc(volBytes);
    let index = 0;
    for (let i = 1; i <= 400; i++) {
      const hot = pattern(i, B);
      await s.apply(++index, 1, encodeWrite(1, 0, hot));
      hot.copy(model, 0);
      const block = 1 + (i % (volBlocks - 1));
      const cold = pattern(10_000 + i, B);
      await s.apply(++index, 1, encodeWrite(1, block * B, cold));
      cold.copy(model, block * B);
      if (i % 3 === 0) await new Promise((r) => setImmediate(r)); // let flushes complete now and then
    }
    const out = Buffer.alloc(volBytes);
    await s.read(1, 0, volBytes, out);
    assert.ok(out.equals(model), 'reads after the rewrites');
    await s.checkpoint();
    await s.close();
    const r = await PgStore.open(io, new ScratchPool(io), dir, 7);
    await r.read(1, 0, volBytes, out);
    assert.ok(out.equals(model), 'the files after a checkpoint');
    await r.close();
  });
}

test('write-behind stores sharing a node budget: an apply over the node limit waits for flushes, so dirty bytes stay bounded', async (t) => {
  const io = new FsBlockIo();
  const limitBlocks = 32;
  // No timer flush within the test: only the limits make data reach the files.
  const scratch = new ScratchPool(io, { nodeDirtyLimitBytes: limitBlocks * B, flushDelayMs: 60_000 });
  const stores = [await PgStore.open(io, scratch, tempDir(t), 1), await PgStore.open(io, scratch, tempDir(t), 2)];
  const models = [Buffer.alloc(volBytes), Buffer.alloc(volBytes)];
  let peak = 0;
  for (let i = 1; i <= 300; i++) {
    const k = i % 2;
    const block = (i * 7) % (volBlocks - 2);
    const data = pattern(i, 2 * B);
    await stores[k].apply(Math.ceil(i / 2), 1, encodeWrite(1, block * B, data));
    data.copy(models[k], block * B);
    peak = Math.max(peak, scratch.writeBehind.bytes);
    assert.ok(scratch.writeBehind.bytes <= limitBlocks * B, `${scratch.writeBehind.bytes} dirty bytes after apply ${i}`);
  }
  assert.ok(peak > (limitBlocks / 2) * B, `the limit was reached (peak ${peak})`);
  for (const [k, s] of stores.entries()) {
    const out = Buffer.alloc(volBytes);
    await s.read(1, 0, volBytes, out);
    assert.ok(out.equals(models[k]), `store ${k} reads back`);
    await s.close();
  }
  assert.equal(scratch.writeBehind.bytes, 0);
});
