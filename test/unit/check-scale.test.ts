import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOperations, kvModel, type KvInput, type KvOutput, type Operation } from '../../src/check/index.js';

/** A small seeded generator (mulberry32), so the history is the same on every run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `clients` clients each run `opsPerClient` get/append/put operations back to back against one
 * real map; every operation takes effect at a random instant inside its own interval.
 */
function concurrentKvHistory(clients: number, opsPerClient: number, keys: number, seed: number): Operation<KvInput, KvOutput>[] {
  const rand = seeded(seed);
  const planned: { process: number; input: KvInput; callAt: number; returnAt: number; at: number }[] = [];
  for (let c = 0; c < clients; c++) {
    let t = rand() * 10;
    for (let k = 0; k < opsPerClient; k++) {
      const length = 1 + rand() * 20;
      const key = String(Math.floor(rand() * keys));
      const kind = rand();
      const input: KvInput = kind < 0.45 ? { f: 'get', key } : kind < 0.9 ? { f: 'append', key, value: `x ${c} ${k} y` } : { f: 'put', key, value: `p ${c} ${k}` };
      planned.push({ process: c, input, callAt: t, returnAt: t + length, at: t + rand() * length });
      t += length + rand() * 5;
    }
  }
  planned.sort((a, b) => a.at - b.at);
  const values = new Map<string, string>();
  return planned.map((p) => {
    const before = values.get(p.input.key) ?? '';
    if (p.input.f === 'put') values.set(p.input.key, p.input.value);
    if (p.input.f === 'append') values.set(p.input.key, before + p.input.value);
    const output: KvOutput = p.input.f === 'get' ? { status: 'ok', value: before } : { status: 'ok' };
    return { process: p.process, input: p.input, output, callAt: p.callAt, returnAt: p.returnAt };
  });
}

test('a 50-client kv history of 2000 operations is decided within a step budget, and a corrupted copy is convicted', () => {
  const ops = concurrentKvHistory(50, 40, 10, 390);
  const ok = checkOperations(kvModel, ops, { maxSteps: 10_000_000 });
  assert.equal(ok.verdict, 'linearizable');
  assert.equal(ok.partitionCount, 10);
  // Corrupt one get on a busy key: it now returns a value with an append nobody made.
  const i = ops.findIndex((o, j) => j > 1000 && o.input.f === 'get' && (o.output.value ?? '').length > 40);
  assert.ok(i > 0);
  const bad = ops.slice();
  bad[i] = { ...ops[i], output: { status: 'ok', value: `${ops[i].output.value}x 999 0 y` } };
  const res = checkOperations(kvModel, bad, { maxSteps: 10_000_000 });
  assert.equal(res.verdict, 'not-linearizable');
  assert.equal(res.failure?.key, ops[i].input.key);
});
