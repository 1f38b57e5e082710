/**
 * A retry loop's wait is spread over the upper half of what it means: never under half (no
 * loop retries much faster than it says), never over all of it (callers' bounds hold), and
 * two loops drawing different numbers do not stay in step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { jitteredMs } from '../../src/common/backoff.js';

test('a jittered wait lies in [nominal / 2, nominal], and at its bounds for the extreme draws', () => {
  assert.equal(jitteredMs(500, () => 0), 250);
  assert.ok(jitteredMs(500, () => 1 - Number.EPSILON) <= 500);
  assert.ok(jitteredMs(500, () => 1 - Number.EPSILON) > 499.99);
  assert.equal(jitteredMs(0, () => 0.7), 0);
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1e7, noNaN: true }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (nominalMs, r) => {
      const ms = jitteredMs(nominalMs, () => r);
      return ms >= nominalMs / 2 && ms <= nominalMs;
    }),
    { numRuns: 2000 },
  );
  // Found by the property: a subnormal wait whose halves' sum rounded past it.
  assert.ok(jitteredMs(7.4e-323, () => 0.9666666666666667) <= 7.4e-323);
});

test('the default draw spreads the waits (not a constant)', () => {
  const waits = new Set(Array.from({ length: 64 }, () => jitteredMs(1000)));
  assert.ok(waits.size > 32, `${waits.size} distinct waits of 64`);
  for (const w of waits) assert.ok(w >= 500 && w <= 1000, `wait ${w}`);
});

test('a negative or non-finite wait, or a draw outside [0, 1), is a bug and says so', () => {
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => jitteredMs(bad), (e: Error & { code?: string }) => e.code === 'ASSERTION_FAILED', String(bad));
  }
  assert.throws(() => jitteredMs(100, () => 1), (e: Error & { code?: string }) => e.code === 'ASSERTION_FAILED');
  assert.throws(() => jitteredMs(100, () => -0.1), (e: Error & { code?: string }) => e.code === 'ASSERTION_FAILED');
});
