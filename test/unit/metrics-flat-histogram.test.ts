/**
 * FlatHistogram (metrics/flat-histogram.ts) is exposed exactly as prom-client's Histogram: for
 * any observations over any label sets, a registry's text (and its JSON) is the same line for
 * line, series that were never observed included or left out alike.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { FlatHistogram } from '../../src/metrics/flat-histogram.js';

const buckets = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5];
const value = fc.oneof(fc.double({ min: 0, max: 10, noNaN: true }), fc.constantFrom(...buckets), fc.constant(0));

test('a labelled flat histogram exposes what prom-client exposes for the same observations', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom('read', 'write', 'flush'), value), { maxLength: 60 }), fc.boolean(), async (observations, resolveFirst) => {
      const theirs = new Registry();
      const ours = new Registry();
      const h = new Histogram({ name: 'x_seconds', help: 'by command', labelNames: ['command'], buckets, registers: [theirs] });
      const f = new FlatHistogram({ name: 'x_seconds', help: 'by command', labelNames: ['command'], buckets, registers: [ours] });
      // A child resolved but never observed is no series, as in prom-client.
      if (resolveFirst) f.labels('trim');
      for (const [command, v] of observations) {
        h.labels(command).observe(v);
        f.labels(command).observe(v);
      }
      assert.equal(await ours.metrics(), await theirs.metrics());
      // As JSON (prom-client's carries `exemplar: undefined` keys, which JSON drops).
      assert.equal(JSON.stringify(await ours.getMetricsAsJSON()), JSON.stringify(await theirs.getMetricsAsJSON()));
    }),
  );
});

test('an unlabelled flat histogram exposes what prom-client exposes, zeros before any observation', async () => {
  const theirs = new Registry();
  const ours = new Registry();
  const h = new Histogram({ name: 'y_seconds', help: 'no labels', buckets, registers: [theirs] });
  const f = new FlatHistogram({ name: 'y_seconds', help: 'no labels', buckets, registers: [ours] });
  assert.equal(await ours.metrics(), await theirs.metrics());
  for (const v of [0.0001, 0.0002, 0.00021, 3, 7, 0.5]) {
    h.observe(v);
    f.observe(v);
  }
  assert.equal(await ours.metrics(), await theirs.metrics());
  h.reset();
  f.reset();
  assert.equal(await ours.metrics(), await theirs.metrics());
});

test('misuse is a bug and says so: bounds not increasing, label values miscounted, observe without labels', () => {
  assert.throws(() => new FlatHistogram({ name: 'z', help: 'z', buckets: [1, 1] }), { code: 'ASSERTION_FAILED' });
  const f = new FlatHistogram({ name: 'z', help: 'z', labelNames: ['a', 'b'], buckets: [1] });
  assert.throws(() => f.labels('only-one'), { code: 'ASSERTION_FAILED' });
  assert.throws(() => f.observe(1), { code: 'ASSERTION_FAILED' });
  assert.equal(f.labels('x', 'y'), f.labels('x', 'y'), 'a child is resolved once');
});
