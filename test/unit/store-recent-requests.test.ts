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
            copy.load(r.toBytes(), 0);
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
  r.load(bytesOf([5, 6, 7, 8, 9]), 0);
  assert.deepEqual(r.toBytes(), bytesOf([7, 8, 9]));
  assert.equal(r.firstTime(6), true);
  assert.equal(r.firstTime(9), false);
  assert.throws(() => r.load(Buffer.alloc(12), 0), { code: 'CORRUPTION' });
  for (const bad of [-5, 1.5, Number.NaN, 2 ** 53]) assert.throws(() => r.load(bytesOf([7, bad]), 0), { code: 'CORRUPTION' }, String(bad));
});

/**
 * The promise coversRetry makes: when it says yes for (notBefore, pending), every key applied
 * at an index past notBefore is in the window now, and still is after `pending` more keys
 * arrive. Driven by random scripts of applies (fresh and repeated keys) and reloads (a
 * checkpoint or an image: indexes are lost and count as the reload's index).
 */
test('recent requests: coversRetry never vouches for a retry whose first key has left or could leave', () => {
  type Step = { kind: 'apply'; key: number } | { kind: 'reload' } | { kind: 'ask'; back: number; pending: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 40 }).map((key): Step => ({ kind: 'apply', key })) },
    { weight: 1, arbitrary: fc.constant<Step>({ kind: 'reload' }) },
    { weight: 2, arbitrary: fc.record({ back: fc.integer({ min: 0, max: 30 }), pending: fc.integer({ min: 0, max: 12 }) }).map((r): Step => ({ kind: 'ask', ...r })) },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.array(step, { maxLength: 150 }), (capacity, script) => {
      /** Replays the script's applies and reloads up to `upTo` steps into a fresh window. */
      const replay = (upTo: number): { r: RecentRequests; index: number } => {
        let r = new RecentRequests(capacity);
        let index = 0;
        for (const s of script.slice(0, upTo)) {
          if (s.kind === 'apply') r.remember(s.key, ++index);
          else if (s.kind === 'reload') {
            const copy = new RecentRequests(capacity);
            copy.load(r.toBytes(), index);
            r = copy;
          }
        }
        return { r, index };
      };
      // Where each key took effect: an entry whose key the window still holds is a duplicate,
      // skipped at apply (PgStore.apply), so only a key the window lacks is applied there.
      const appliedAt: [number, number][] = [];
      let index = 0;
      script.forEach((s, i) => {
        if (s.kind === 'apply') {
          index++;
          if (!replay(i).r.has(s.key)) appliedAt.push([s.key, index]);
        }
        if (s.kind !== 'ask') return;
        const notBefore = Math.max(0, index - s.back);
        const { r } = replay(i);
        if (!r.coversRetry(notBefore, s.pending)) return;
        // Later entries first: `pending` keys never seen, each evicting if the window is full.
        for (let k = 0; k < s.pending; k++) r.remember(1000 + k, index + 1 + k);
        for (const [key, at] of appliedAt) {
          if (at > notBefore) assert.ok(r.has(key), `key ${key} applied at ${at} > ${notBefore} left after ${s.pending} more (capacity ${capacity})`);
        }
      });
    }),
  );
});

test('recent requests: a full window loaded from an image vouches only for retries sent at or after its index', () => {
  const r = new RecentRequests(4);
  const keys = Buffer.alloc(32);
  [11, 12, 13, 14].forEach((k, i) => keys.writeDoubleBE(k, i * 8));
  r.load(keys, 100);
  assert.equal(r.coversRetry(99, 0), false, 'keys older than the image may have left before it');
  assert.equal(r.coversRetry(100, 4), true, 'the four loaded keys leave before any newer one');
  assert.equal(r.coversRetry(100, 5), false, 'a fifth apply would push out a key applied after 100');
  const partial = new RecentRequests(4);
  partial.load(keys.subarray(0, 16), 100);
  assert.equal(partial.coversRetry(0, 2), true, 'a window never full has lost nothing');
  assert.equal(partial.coversRetry(0, 3), false);
});
