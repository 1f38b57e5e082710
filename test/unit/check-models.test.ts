import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  HistoryRecorder,
  blockModel,
  casRegisterModel,
  checkOperations,
  describeResult,
  failOutput,
  kvModel,
  okOutput,
  registerModel,
  unknownOutput,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  type RegisterValue,
} from '../../src/check/index.js';
import { parseBlockJsonl, parseJepsenLog } from '../../src/check/parse/index.js';

type RegOp = Operation<RegisterInput, RegisterOutput>;

/** An operation over [callAt, returnAt]; returnAt Infinity for unknown outcomes. */
function op(input: RegisterInput, output: RegisterOutput, callAt: number, returnAt: number, process = callAt): RegOp {
  return { process, input, output, callAt, returnAt };
}
const w = (value: RegisterValue): RegisterInput => ({ f: 'write', value });
const r: RegisterInput = { f: 'read' };
const cas = (from: RegisterValue, to: RegisterValue): RegisterInput => ({ f: 'cas', from, to });
const got = (value: RegisterValue): RegisterOutput => ({ status: 'ok', value });

function verdict(ops: RegOp[], model = casRegisterModel): string {
  return checkOperations(model, ops).verdict;
}

test('register: a read sees the last completed write', () => {
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(r, got(1), 2, 3)], registerModel), 'linearizable');
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(r, got(null), 2, 3)], registerModel), 'not-linearizable');
});

test('register: a read concurrent with a write may see either value', () => {
  assert.equal(verdict([op(w(1), okOutput, 0, 10), op(r, got(null), 2, 3), op(r, got(1), 4, 5)], registerModel), 'linearizable');
  // ...but once it has seen the new value, a later read may not see the old one.
  assert.equal(verdict([op(w(1), okOutput, 0, 10), op(r, got(1), 2, 3), op(r, got(null), 4, 5)], registerModel), 'not-linearizable');
});

test('register: a stale read after an overwrite completed is caught', () => {
  const ops = [op(w(1), okOutput, 0, 1), op(w(2), okOutput, 2, 3), op(r, got(1), 4, 5)];
  assert.equal(verdict(ops, registerModel), 'not-linearizable');
});

test('register model refuses compare-and-set operations', () => {
  assert.equal(verdict([op(cas(null, 1), okOutput, 0, 1)], registerModel), 'not-linearizable');
  assert.equal(verdict([op(cas(null, 1), okOutput, 0, 1)]), 'linearizable');
});

test('cas-register: a successful cas needs the expected value', () => {
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(cas(1, 2), okOutput, 2, 3), op(r, got(2), 4, 5)]), 'linearizable');
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(cas(3, 2), okOutput, 2, 3)]), 'not-linearizable');
});

test('cas-register: a failed cas constrains the state (the value was not A)', () => {
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(cas(1, 2), failOutput, 2, 3)]), 'not-linearizable');
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(cas(3, 2), failOutput, 2, 3), op(r, got(1), 4, 5)]), 'linearizable');
  // Concurrent with a write of another value, the failure is explained by ordering it after.
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(w(5), okOutput, 2, 6), op(cas(1, 2), failOutput, 3, 4)]), 'linearizable');
});

test('cas-register: an unknown write may take effect at any time after its call, or never', () => {
  const unknownWrite = op(w(5), unknownOutput, 0, Infinity);
  assert.equal(verdict([unknownWrite, op(r, got(5), 10, 11)]), 'linearizable');
  assert.equal(verdict([unknownWrite, op(r, got(null), 10, 11)]), 'linearizable');
  // Long after another write completed and was read.
  assert.equal(verdict([unknownWrite, op(w(6), okOutput, 2, 3), op(r, got(6), 4, 5), op(r, got(5), 6, 7)]), 'linearizable');
  // But once seen it cannot be undone: nobody wrote nil back.
  assert.equal(verdict([unknownWrite, op(r, got(5), 10, 11), op(r, got(null), 12, 13)]), 'not-linearizable');
  // Nor can it be seen before it was invoked.
  assert.equal(verdict([op(r, got(5), 0, 1), op(w(5), unknownOutput, 2, Infinity)]), 'not-linearizable');
});

test('cas-register: an unknown cas applies only if its expected value held', () => {
  const base = [op(w(1), okOutput, 0, 1), op(cas(1, 2), unknownOutput, 2, Infinity)];
  assert.equal(verdict([...base, op(r, got(2), 5, 6)]), 'linearizable');
  assert.equal(verdict([...base, op(r, got(1), 5, 6), op(r, got(2), 7, 8)]), 'linearizable');
  assert.equal(verdict([...base, op(r, got(2), 5, 6), op(r, got(1), 7, 8)]), 'not-linearizable');
  // Its expected value never held: it cannot have produced 2.
  assert.equal(verdict([op(w(1), okOutput, 0, 1), op(cas(7, 2), unknownOutput, 2, Infinity), op(r, got(2), 5, 6)]), 'not-linearizable');
});

test('history recorder: info and pending-at-end are unknown, a failed or unanswered read is dropped', () => {
  const h = new HistoryRecorder(casRegisterModel);
  h.invoke(1, w(1));
  h.ok(1, okOutput);
  h.invoke(2, r);
  h.fail(2); // a read that failed constrains nothing
  h.invoke(3, w(2));
  h.info(3);
  h.invoke(4, r);
  h.info(4); // a read that timed out constrains nothing either
  h.invoke(5, cas(1, 3));
  h.fail(5);
  h.invoke(6, w(4)); // never completes
  const ops = h.operations();
  assert.equal(h.dropped, 2);
  assert.equal(ops.length, 4);
  assert.deepEqual(
    ops.map((o) => [o.input.f, o.output.status, o.returnAt === Infinity]),
    [
      ['write', 'ok', false],
      ['write', 'unknown', true],
      ['cas', 'fail', false],
      ['write', 'unknown', true],
    ],
  );
  // The cas failed, so the unknown write of 2 must have happened before it.
  assert.equal(checkOperations(casRegisterModel, ops).verdict, 'linearizable');
  assert.throws(() => h.invoke(6, r), /in flight/);
  assert.throws(() => h.ok(9, okOutput), /no operation in flight/);
});

test('jepsen log: :fail :read :timed-out is dropped, :info stays pending to the end', () => {
  const log = [
    'INFO  jepsen.util - 0\t:invoke\t:write\t1',
    'INFO  jepsen.util - 0\t:ok\t:write\t1',
    'INFO  jepsen.util - 1\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 1\t:fail\t:read\t:timed-out',
    'INFO  jepsen.util - 2\t:invoke\t:write\t3',
    'INFO  jepsen.util - 2\t:info\t:write\t:timed-out',
    'INFO  jepsen.util - :nemesis\t:info\t:start\tnil',
    'INFO  jepsen.util - 3\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 3\t:ok\t:read\t1',
    'INFO  jepsen.util - 4\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 4\t:ok\t:read\t3',
    'INFO  jepsen.util - 4\t:invoke\t:cas\t[3 4]',
    'INFO  jepsen.util - 4\t:fail\t:cas\t[3 4]',
    'some other log line',
  ].join('\n');
  const h = parseJepsenLog(log, casRegisterModel);
  assert.equal(h.dropped, 1);
  assert.equal(h.operations.length, 5);
  // The cas [3 4] failed after 3 was read, and nobody else wrote: not linearizable.
  assert.equal(checkOperations(casRegisterModel, h.operations).verdict, 'not-linearizable');
  const h2 = parseJepsenLog(log.replace(':fail\t:cas', ':ok\t:cas'), casRegisterModel);
  assert.equal(checkOperations(casRegisterModel, h2.operations).verdict, 'linearizable');
});

test('keyed cas-register partitions by key and reports the failing key', () => {
  const k = (key: string, input: RegisterInput): RegisterInput => ({ ...input, key });
  const ops = [
    op(k('a', w(1)), okOutput, 0, 1),
    op(k('b', w(1)), okOutput, 2, 3),
    op(k('a', r), got(1), 4, 5),
    op(k('b', r), got(null), 6, 7),
  ];
  const res = checkOperations(casRegisterModel, ops);
  assert.equal(res.verdict, 'not-linearizable');
  assert.equal(res.partitionCount, 2);
  assert.equal(res.failure?.key, 'b');
  assert.equal(res.failure?.stuck.output.value, null);
  const text = describeResult(casRegisterModel, res);
  assert.match(text, /^not-linearizable\n/);
  assert.match(text, /partition "b"/);
  assert.match(text, /cannot be linearized before it returns:\n {2}p6 \["b"\] read -> nil/);
});

test('kv: appends compose, a get must match some order of them', () => {
  const a = (key: string, value: string) => ({ f: 'append' as const, key, value });
  const g = (key: string) => ({ f: 'get' as const, key });
  const ok = { status: 'ok' as const };
  const val = (value: string) => ({ status: 'ok' as const, value });
  const ops = [
    { process: 0, input: a('x', 'A'), output: ok, callAt: 0, returnAt: 10 },
    { process: 1, input: a('x', 'B'), output: ok, callAt: 1, returnAt: 9 },
    { process: 2, input: g('x'), output: val('BA'), callAt: 11, returnAt: 12 },
    { process: 3, input: g('y'), output: val(''), callAt: 11, returnAt: 12 },
    { process: 3, input: { f: 'put' as const, key: 'y', value: 'P' }, output: ok, callAt: 13, returnAt: 14 },
    { process: 3, input: g('y'), output: val('P'), callAt: 15, returnAt: 16 },
  ];
  assert.equal(checkOperations(kvModel, ops).verdict, 'linearizable');
  const bad = ops.map((o, i) => (i === 2 ? { ...o, output: val('AC') } : o));
  const res = checkOperations(kvModel, bad);
  assert.equal(res.verdict, 'not-linearizable');
  assert.equal(res.failure?.key, 'x');
});

test('block: reads see the latest tag, never-written blocks read null, unknown writes may land late', () => {
  const lines = [
    { process: 1, type: 'invoke', f: 'read', block: 3 },
    { process: 1, type: 'ok', f: 'read', block: 3, value: null },
    { process: 1, type: 'invoke', f: 'write', block: 3, value: 'c1-1' },
    { process: 2, type: 'invoke', f: 'write', block: 3, value: 'c2-1' },
    { process: 1, type: 'ok', f: 'write', block: 3, value: 'c1-1' },
    { process: 2, type: 'info', f: 'write', block: 3, value: 'c2-1' },
    { process: 3, type: 'invoke', f: 'read', block: 3 },
    { process: 3, type: 'ok', f: 'read', block: 3, value: 'c1-1' },
    { process: 4, type: 'invoke', f: 'write', block: 9, value: 'c4-1' },
    { process: 4, type: 'ok', f: 'write', block: 9, value: 'c4-1' },
    { process: 3, type: 'invoke', f: 'read', block: 3 },
    { process: 3, type: 'ok', f: 'read', block: 3, value: 'c2-1' },
    { process: 5, type: 'invoke', f: 'read', block: 9 },
    { process: 5, type: 'fail', f: 'read', block: 9 },
  ];
  const text = lines.map((l) => JSON.stringify(l)).join('\n');
  const h = parseBlockJsonl(text, blockModel);
  assert.equal(h.dropped, 1);
  const res = checkOperations(blockModel, h.operations);
  assert.equal(res.verdict, 'linearizable');
  assert.equal(res.partitionCount, 2);

  // A stale read: c1-1 again after c2-1 was seen.
  const stale = [...lines, { process: 3, type: 'invoke', f: 'read', block: 3 }, { process: 3, type: 'ok', f: 'read', block: 3, value: 'c1-1' }];
  const res2 = checkOperations(blockModel, parseBlockJsonl(stale.map((l) => JSON.stringify(l)).join('\n'), blockModel).operations);
  assert.equal(res2.verdict, 'not-linearizable');
  assert.equal(res2.failure?.key, '3');

  // A tag nobody wrote.
  const phantom = [{ process: 1, type: 'invoke', f: 'read', block: 0 }, { process: 1, type: 'ok', f: 'read', block: 0, value: 'c9-9' }];
  const res3 = checkOperations(blockModel, parseBlockJsonl(phantom.map((l) => JSON.stringify(l)).join('\n'), blockModel).operations);
  assert.equal(res3.verdict, 'not-linearizable');
});

test('block: a write of null zeroes the block, so it reads as never written again', () => {
  const ev = [
    { process: 1, type: 'invoke', f: 'write', block: 0, value: 'a' },
    { process: 1, type: 'ok', f: 'write', block: 0, value: 'a' },
    { process: 1, type: 'invoke', f: 'write', block: 0, value: null },
    { process: 1, type: 'ok', f: 'write', block: 0, value: null },
    { process: 2, type: 'invoke', f: 'read', block: 0 },
    { process: 2, type: 'ok', f: 'read', block: 0, value: null },
  ];
  const text = ev.map((l) => JSON.stringify(l)).join('\n');
  const h = parseBlockJsonl(text, blockModel);
  assert.equal(checkOperations(blockModel, h.operations).verdict, 'linearizable');
  assert.match(blockModel.describeOperation(h.operations[1].input, h.operations[1].output), /^zero block 0$/);
  const stale = parseBlockJsonl(text.replace(/"value":null}$/, '"value":"a"}'), blockModel);
  assert.equal(checkOperations(blockModel, stale.operations).verdict, 'not-linearizable');
});

test('block format: with times on every event, events are ordered by time, not by line', () => {
  // The read completes (t=5) before the write is invoked (t=6), although its line comes later.
  const lines = [
    { process: 1, type: 'invoke', f: 'write', block: 0, value: 'a', time: 6 },
    { process: 1, type: 'ok', f: 'write', block: 0, value: 'a', time: 7 },
    { process: 2, type: 'invoke', f: 'read', block: 0, time: 4 },
    { process: 2, type: 'ok', f: 'read', block: 0, value: 'a', time: 5 },
  ];
  const text = lines.map((l) => JSON.stringify(l)).join('\n');
  assert.equal(checkOperations(blockModel, parseBlockJsonl(text, blockModel).operations).verdict, 'not-linearizable');
  // Equal times count as concurrent.
  const tied = text.replace('"time":5', '"time":6');
  assert.equal(checkOperations(blockModel, parseBlockJsonl(tied, blockModel).operations).verdict, 'linearizable');
  assert.throws(() => parseBlockJsonl(text.replace(',"time":7', ''), blockModel), /"time" is on 3 of 4 events/);
});

test('budget: a step budget or a deadline callback ends the search with unknown', () => {
  // Many concurrent unknown writes and a read that no order explains: a large search (the
  // unknown cas keeps the writes from being simplified away).
  const ops: RegOp[] = [op(cas(50, 51), unknownOutput, 0, Infinity)];
  for (let i = 0; i < 18; i++) ops.push(op(w(i), unknownOutput, i, Infinity));
  ops.push(op(r, got(99), 100, 101));
  assert.equal(checkOperations(casRegisterModel, ops, { maxSteps: 5000 }).verdict, 'unknown');
  let polls = 0;
  const res = checkOperations(casRegisterModel, ops, { deadlineCheck: () => ++polls > 3, pollEverySteps: 100 });
  assert.equal(res.verdict, 'unknown');
  assert.equal(polls, 4);
  assert.ok(res.steps >= 400 && res.steps < 1000);
});

test('budget: a small failing partition is still convicted when a large one runs out of budget', () => {
  const k = (key: string, input: RegisterInput): RegisterInput => ({ ...input, key });
  const ops: RegOp[] = [op(k('big', cas(50, 51)), unknownOutput, 0, Infinity)];
  for (let i = 0; i < 18; i++) ops.push(op(k('big', w(i)), unknownOutput, i, Infinity));
  ops.push(op(k('big', r), got(99), 100, 101));
  ops.push(op(k('small', w(1)), okOutput, 0, 1), op(k('small', r), got(2), 2, 3));
  const res = checkOperations(casRegisterModel, ops, { maxSteps: 5000 }, { allPartitions: true });
  assert.equal(res.verdict, 'not-linearizable');
  assert.equal(res.failure?.key, 'small');
  assert.deepEqual(res.partitions.map((p) => [p.key, p.verdict]), [['small', 'not-linearizable'], ['big', 'unknown']]);
});

test('unknown writes whose value nobody read are simplified away, and the verdict stays exact', () => {
  const ops: RegOp[] = [];
  for (let i = 0; i < 40; i++) ops.push(op(w(i), unknownOutput, i, Infinity));
  ops.push(op(r, got(7), 100, 101), op(r, got(3), 102, 103));
  const res = checkOperations(registerModel, ops, { maxSteps: 100_000 });
  assert.equal(res.verdict, 'linearizable');
  assert.equal(res.partitions[0].simplifiedAway, 38);
  // Each write takes effect once: 7 cannot come back after 3.
  assert.equal(checkOperations(registerModel, [...ops, op(r, got(7), 104, 105)], { maxSteps: 100_000 }).verdict, 'not-linearizable');
  // Nobody wrote nil back.
  assert.equal(checkOperations(registerModel, [...ops, op(r, got(null), 104, 105)], { maxSteps: 100_000 }).verdict, 'not-linearizable');
  // With a CAS in the partition, nothing is simplified (a failed CAS observes the state too).
  const withCas = [...ops, op(cas(5, 6), failOutput, 108, 109)];
  assert.equal(checkOperations(casRegisterModel, withCas, { maxSteps: 1000 }).partitions[0].simplifiedAway, 0);
});

test('a partition whose memo would pass its byte limit is unknown, not a crash', () => {
  const ops: RegOp[] = [op(cas(50, 51), unknownOutput, 0, Infinity)];
  for (let i = 0; i < 18; i++) ops.push(op(w(i), unknownOutput, i, Infinity));
  ops.push(op(r, got(99), 100, 101));
  const res = checkOperations(casRegisterModel, ops, { maxCacheBytes: 64 * 1024 });
  assert.equal(res.verdict, 'unknown');
  assert.deepEqual(res.unknownBecause, ['memory']);
});

test('operations returning before their call are refused', () => {
  assert.throws(() => checkOperations(casRegisterModel, [op(w(1), okOutput, 5, 4)]), /return time/);
});
