import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, sharedTestdata } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';

const base = join(sharedTestdata, 'linearizability');

function checkHistory(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, 'check-history', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertNoStackTrace(stderr: string): void {
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

test('check-history prints linearizable and exits 0 for a linearizable jepsen-etcd log', () => {
  const r = checkHistory(join(base, 'jepsen-etcd', 'etcd_002.log'), '--model', 'cas-register');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.split('\n')[0], 'linearizable');
});

test('check-history prints not-linearizable, the failing partition and its operations, and exits 1', () => {
  const r = checkHistory(join(base, 'jepsen-etcd', 'etcd_000.log'), '--model', 'cas-register');
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout.split('\n')[0], 'not-linearizable');
  assert.match(r.stdout, /cannot be linearized before it returns:\n {2}p\d+ read -> \d/);
  const kv = checkHistory(join(base, 'kv', 'c10-bad.txt'), '--model', 'kv');
  assert.equal(kv.status, 1, kv.stderr);
  assert.match(kv.stdout, /smallest failing partition: partition "\d+" \(\d+ operations\)/);
  const ok = checkHistory(join(base, 'kv', 'c10-ok.txt'), '--model', 'kv');
  assert.equal(ok.status, 0, ok.stderr);
});

test('check-history prints unknown and exits 2 when its budget runs out', () => {
  // etcd_002 needs over a million search steps.
  const byTime = checkHistory(join(base, 'jepsen-etcd', 'etcd_002.log'), '--model', 'cas-register', '--timeout-ms', '1');
  assert.equal(byTime.status, 2, byTime.stderr);
  assert.equal(byTime.stdout.split('\n')[0], 'unknown');
  const bySteps = checkHistory(join(base, 'jepsen-etcd', 'etcd_002.log'), '--model', 'cas-register', '--max-steps', '5000');
  assert.equal(bySteps.status, 2, bySteps.stderr);
  assert.equal(bySteps.stdout.split('\n')[0], 'unknown');
});

test('check-history reads the block JSON-lines format', (t) => {
  const dir = tempDir(t);
  const events = [
    { process: 1, type: 'invoke', f: 'write', block: 5, value: 'c1-1', time: 100 },
    { process: 2, type: 'invoke', f: 'read', block: 5, time: 110 },
    { process: 2, type: 'ok', f: 'read', block: 5, value: null, time: 120 },
    { process: 1, type: 'ok', f: 'write', block: 5, value: 'c1-1', time: 130 },
    { process: 2, type: 'invoke', f: 'read', block: 5, time: 140 },
    { process: 2, type: 'ok', f: 'read', block: 5, value: 'c1-1', time: 150 },
  ];
  const good = join(dir, 'good.jsonl');
  writeFileSync(good, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  const r = checkHistory(good, '--model', 'block');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.stdout.split('\n')[0], 'linearizable');

  const stale = join(dir, 'stale.jsonl');
  const more = [
    { process: 3, type: 'invoke', f: 'read', block: 5, time: 160 },
    { process: 3, type: 'ok', f: 'read', block: 5, value: null, time: 170 },
  ];
  writeFileSync(stale, [...events, ...more].map((e) => JSON.stringify(e)).join('\n') + '\n');
  const s = checkHistory(stale, '--model', 'block');
  assert.equal(s.status, 1, s.stderr);
  assert.match(s.stdout, /partition "5"/);
  assert.match(s.stdout, /p3 read block 5 -> nil/);
});

test('check-history rejects bad input with a clear message, exit 3 and no stack trace', (t) => {
  const dir = tempDir(t);
  const garbage = join(dir, 'garbage.txt');
  writeFileSync(garbage, '{"process": 1, "type": "invoke"\nnot json at all\n');
  const empty = join(dir, 'empty.log');
  writeFileSync(empty, 'nothing to see here\n');
  const cases: { args: string[]; message: RegExp }[] = [
    { args: [join(dir, 'missing.log'), '--model', 'kv'], message: /cannot read .*missing\.log: ENOENT/ },
    { args: [garbage, '--model', 'block'], message: /line 1: not JSON/ },
    { args: [garbage, '--model', 'kv'], message: /line 1: / },
    { args: [empty, '--model', 'cas-register'], message: /no cas-register operation events found/ },
    { args: [join(base, 'kv', 'c01-ok.txt'), '--model', 'linked-list'], message: /unknown model "linked-list"/ },
    { args: [join(base, 'kv', 'c01-ok.txt')], message: /required option '--model/ },
    { args: [join(base, 'kv', 'c01-ok.txt'), '--model', 'kv', '--timeout-ms', 'soon'], message: /--timeout-ms must be a positive integer/ },
  ];
  for (const c of cases) {
    const r = checkHistory(...c.args);
    assert.equal(r.status, 3, `${c.args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, c.message);
    assertNoStackTrace(r.stderr);
    assert.equal(r.stdout, '');
  }
});
