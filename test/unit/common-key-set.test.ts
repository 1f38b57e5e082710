/**
 * KeySet (common/key-set.ts), the flat hash set of the dedupe window: against a JS Set, over
 * random adds, deletes and lookups, with keys drawn from a few values (long probe runs and
 * every case of the shift-back deletion, wrapping past the table's end) and from the request
 * keys' real range (session·2^32 + sequence).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KeySet } from '../../src/common/key-set.js';

type Step = { op: 'add' | 'delete' | 'has'; key: number };

function run(capacity: number, steps: Step[]): void {
  const s = new KeySet(capacity);
  const model = new Set<number>();
  for (const { op, key } of steps) {
    if (op === 'add') {
      if (!model.has(key) && model.size === capacity) continue; // full: never asked of it
      assert.equal(s.add(key), !model.has(key), `add ${key}`);
      model.add(key);
    } else if (op === 'delete') {
      assert.equal(s.delete(key), model.delete(key), `delete ${key}`);
    } else {
      assert.equal(s.has(key), model.has(key), `has ${key}`);
    }
    assert.equal(s.size, model.size);
  }
  for (const k of model) assert.ok(s.has(k), `lost ${k}`);
}

test('a key set answers as a Set does, keys from a few values (dense probe runs)', () => {
  const step = fc.record({ op: fc.constantFrom<Step['op']>('add', 'add', 'delete', 'has'), key: fc.integer({ min: 1, max: 40 }) });
  fc.assert(fc.property(fc.integer({ min: 1, max: 24 }), fc.array(step, { maxLength: 300 }), run), { numRuns: 300 });
});

test('a key set answers as a Set does, request keys (session·2^32 + sequence)', () => {
  const key = fc.tuple(fc.integer({ min: 1, max: 2 ** 20 - 1 }), fc.integer({ min: 0, max: 2 ** 32 - 1 })).map(([s, q]) => s * 2 ** 32 + q);
  const step = fc.record({ op: fc.constantFrom<Step['op']>('add', 'add', 'delete', 'has'), key: fc.oneof(key, fc.constantFrom(2 ** 32, 2 ** 32 + 1, 2 ** 33, Number.MAX_SAFE_INTEGER)) });
  fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.array(step, { maxLength: 300 }), run), { numRuns: 200 });
});

test('a window of keys coming and going (the dedupe pattern) never loses one', () => {
  const s = new KeySet(1000);
  const base = 77 * 2 ** 32;
  for (let i = 0; i < 200_000; i++) {
    if (i >= 1000) assert.ok(s.delete(base + i - 1000));
    s.add(base + i);
  }
  assert.equal(s.size, 1000);
  for (let i = 199_000; i < 200_000; i++) assert.ok(s.has(base + i));
  assert.ok(!s.has(base + 198_999));
});

test('0, negative, fractional and unsafe numbers are never in a key set, and adding one is a bug', () => {
  const s = new KeySet(4);
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 53, Number.POSITIVE_INFINITY]) {
    assert.equal(s.has(bad), false);
    assert.equal(s.delete(bad), false);
    assert.throws(() => s.add(bad), { code: 'ASSERTION_FAILED' }, String(bad));
  }
  for (const k of [1, 2, 3, 4]) s.add(k);
  assert.throws(() => s.add(5), { code: 'ASSERTION_FAILED' });
  assert.equal(s.add(4), false, 'a key already there is no addition, full or not');
  s.clear();
  assert.equal(s.size, 0);
  assert.equal(s.has(1), false);
});
