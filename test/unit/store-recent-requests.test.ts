import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecentRequests } from '../../src/store/recent-requests.js';

/** The obvious model: an array, oldest first. */
class Model {
  keys: number[] = [];
  constructor(readonly capacity: number) {}
  firstTime(key: number): boolean {
    if (key === 0) return true;
    if (this.keys.includes(key)) return false;
    this.keys.push(key);
    if (this.keys.length > this.capacity) this.keys.shift();
    return true;
  }
}

const bytesOf = (keys: number[]): Buffer => {
  const b = Buffer.alloc(keys.length * 8);
  keys.forEach((k, i) => b.writeDoubleBE(k, i * 8));
  return b;
};

test('recent requests: answers and keeps the window of the obvious model, across save and load', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.array(fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constant(-1)), { maxLength: 200 }),
      (capacity, script) => {
        let r = new RecentRequests(capacity);
        const m = new Model(capacity);
        for (const step of script) {
          if (step === -1) {
            // Save and load into a fresh window (a checkpoint, a snapshot).
            const copy = new RecentRequests(capacity);
            copy.load(r.toBytes());
            r = copy;
            continue;
          }
          assert.equal(r.firstTime(step), m.firstTime(step), `key ${step}`);
          assert.deepEqual(r.toBytes(), bytesOf(m.keys));
          assert.equal(r.size, m.keys.length);
        }
      },
    ),
  );
});

test('recent requests: loading more keys than the window keeps the newest; bad bytes are corruption', () => {
  const r = new RecentRequests(3);
  r.load(bytesOf([5, 6, 7, 8, 9]));
  assert.deepEqual(r.toBytes(), bytesOf([7, 8, 9]));
  assert.equal(r.firstTime(6), true);
  assert.equal(r.firstTime(9), false);
  assert.throws(() => r.load(Buffer.alloc(12)), { code: 'CORRUPTION' });
});
