import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { majorityValue } from '../../src/raft/progress.js';

test('majorityValue is the (n/2+1)-th largest value, as a plain sort finds it', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: -5, max: 1e9 }), fc.constant(Number.NEGATIVE_INFINITY)), { maxLength: 9 }), (values) => {
      const ids = values.map((_, i) => i + 1);
      const got = majorityValue(ids, (id) => values[id - 1]);
      const sorted = [...values].sort((a, b) => b - a);
      assert.equal(got, values.length === 0 ? Number.POSITIVE_INFINITY : sorted[Math.floor(values.length / 2)]);
    }),
  );
});
