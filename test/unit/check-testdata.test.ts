import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkOperations } from '../../src/check/index.js';
import { parseHistory } from '../../src/check/parse/index.js';
import { sharedTestdata } from '../helpers/paths.js';

const base = join(sharedTestdata, 'linearizability');

/** Generous for these files (the slowest needs ~1.4M steps); past it `unknown`, never a wrong verdict. */
const maxSteps = 20_000_000;

test('every jepsen-etcd history gets the verdict in expected.tsv (cas-register)', () => {
  const rows = readFileSync(join(base, 'jepsen-etcd', 'expected.tsv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split('\t'));
  assert.equal(rows.length, 70);
  const wrong: string[] = [];
  for (const [file, expected] of rows) {
    const h = parseHistory(readFileSync(join(base, 'jepsen-etcd', file), 'utf8'), 'cas-register');
    assert.ok(h.operations.length > 0, `${file} has operations`);
    const r = checkOperations(h.model, h.operations, { maxSteps });
    if (r.verdict !== expected) wrong.push(`${file}: expected ${expected}, got ${r.verdict}`);
  }
  assert.deepEqual(wrong, []);
});

test('every kv history gets the verdict in its name (-ok linearizable, -bad not)', () => {
  const files = readdirSync(join(base, 'kv')).filter((f) => f.endsWith('.txt'));
  assert.ok(files.length >= 4);
  for (const file of files) {
    const h = parseHistory(readFileSync(join(base, 'kv', file), 'utf8'), 'kv');
    const r = checkOperations(h.model, h.operations, { maxSteps });
    const expected = file.includes('-bad') ? 'not-linearizable' : 'linearizable';
    assert.equal(r.verdict, expected, file);
    if (expected === 'not-linearizable') {
      assert.ok(r.failure, `${file}: a failure report`);
      // The reported partition is the smallest failing one: every smaller partition that was searched passed.
      const smaller = r.partitions.filter((p) => p.operations < r.failure!.operations.length);
      assert.ok(smaller.every((p) => p.verdict === 'linearizable'), file);
    }
  }
});

test('a kv history partitions by key and names the failing key', () => {
  const h = parseHistory(readFileSync(join(base, 'kv', 'c01-bad.txt'), 'utf8'), 'kv');
  const r = checkOperations(h.model, h.operations, {}, { allPartitions: true });
  assert.equal(r.verdict, 'not-linearizable');
  assert.ok(r.partitionCount > 1);
  const failing = r.partitions.filter((p) => p.verdict === 'not-linearizable').map((p) => p.key);
  assert.ok(failing.includes(r.failure!.key));
  assert.ok(r.failure!.operations.every((op) => (op.input as { key: string }).key === r.failure!.key));
});
