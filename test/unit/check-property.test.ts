import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  blockModel,
  casRegisterModel,
  checkOperations,
  kvModel,
  type BlockInput,
  type BlockOutput,
  type KvInput,
  type KvOutput,
  type Model,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  type RegisterValue,
} from '../../src/check/index.js';

/**
 * Runs `inputs` through `model` sequentially at linearization points 10, 20, 30, ..., and
 * gives each operation an interval around its point (so they overlap at random). Operations
 * marked unknown either took effect at their point or never did, and never return.
 */
function execute<S, I, O>(
  model: Model<S, I, O>,
  steps: { input: I; before: number; after: number; unknown: boolean; applied: boolean }[],
  outputOf: (state: S, input: I) => O,
  unknownOf: (input: I) => O | null,
): Operation<I, O>[] {
  let state = model.init();
  const ops: Operation<I, O>[] = [];
  steps.forEach((s, i) => {
    const point = 10 * (i + 1);
    const real = outputOf(state, s.input);
    const unknown = s.unknown ? unknownOf(s.input) : null;
    if (unknown === null || s.applied) {
      const r = model.step(state, s.input, real);
      assert.ok(r.ok, 'the generator runs the model itself');
      state = r.newState;
    }
    const callAt = point - s.before;
    if (unknown !== null) ops.push({ process: i, input: s.input, output: unknown, callAt, returnAt: Infinity });
    else ops.push({ process: i, input: s.input, output: real, callAt, returnAt: point + s.after });
  });
  return ops;
}

const overlap = fc.record({ before: fc.integer({ min: 0, max: 35 }), after: fc.integer({ min: 0, max: 35 }), unknown: fc.boolean(), applied: fc.boolean() });
const small = fc.integer({ min: 0, max: 3 });

const registerInput: fc.Arbitrary<RegisterInput> = fc.oneof(
  fc.constant<RegisterInput>({ f: 'read' }),
  small.map<RegisterInput>((value) => ({ f: 'write', value })),
  fc.tuple(fc.option(small, { nil: null }), small).map<RegisterInput>(([from, to]) => ({ f: 'cas', from, to })),
);
const registerSteps = fc.array(fc.tuple(registerInput, overlap).map(([input, o]) => ({ input, ...o })), { minLength: 1, maxLength: 24 });

function registerOutput(state: RegisterValue, input: RegisterInput): RegisterOutput {
  if (input.f === 'read') return { status: 'ok', value: state };
  if (input.f === 'cas') return { status: state === input.from ? 'ok' : 'fail' };
  return { status: 'ok' };
}

/** Indexes of definite reads whose value a corruption could change. */
function okReads<I extends { f: string }, O extends { status: string }>(ops: Operation<I, O>[]): number[] {
  return ops.flatMap((o, i) => ((o.input.f === 'read' || o.input.f === 'get') && o.output.status === 'ok' ? [i] : []));
}

test('property: cas-register histories from a real sequential run with random overlap are linearizable', () => {
  fc.assert(
    fc.property(registerSteps, (steps) => {
      const ops = execute(casRegisterModel, steps, registerOutput, casRegisterModel.unknownOutput);
      assert.equal(checkOperations(casRegisterModel, ops).verdict, 'linearizable');
    }),
    { numRuns: 300, seed: 4242 },
  );
});

test('property: a cas-register read corrupted to a never-written value is never linearizable', () => {
  fc.assert(
    fc.property(registerSteps, fc.nat(), (steps, pick) => {
      const ops = execute(casRegisterModel, steps, registerOutput, casRegisterModel.unknownOutput);
      const reads = okReads(ops);
      fc.pre(reads.length > 0);
      const i = reads[pick % reads.length];
      ops[i] = { ...ops[i], output: { status: 'ok', value: 1000 } };
      const res = checkOperations(casRegisterModel, ops);
      assert.equal(res.verdict, 'not-linearizable');
      // The reported prefix really is a linearization of what it lists, and the stuck
      // operation is not in it.
      let state: RegisterValue = null;
      const placed = new Set(res.failure!.longestPrefix);
      for (const o of res.failure!.longestPrefix) {
        const r = casRegisterModel.step(state, o.input, o.output);
        assert.ok(r.ok, 'every step of the reported prefix fits');
        state = r.newState;
      }
      for (const o of ops) {
        if (placed.has(o)) continue;
        for (const p of res.failure!.longestPrefix) assert.ok(!(o.returnAt < p.callAt), 'nothing left out had to precede the prefix');
      }
      assert.ok(!placed.has(res.failure!.stuck));
    }),
    { numRuns: 300, seed: 4243 },
  );
});

const kvInput: fc.Arbitrary<KvInput> = fc.tuple(fc.constantFrom('a', 'b', 'c'), fc.integer({ min: 0, max: 2 }), fc.string({ minLength: 1, maxLength: 2 })).map(([key, kind, value]) =>
  kind === 0 ? { f: 'get', key } : kind === 1 ? { f: 'put', key, value } : { f: 'append', key, value },
);
const kvSteps = fc.array(fc.tuple(kvInput, overlap).map(([input, o]) => ({ input, ...o })), { minLength: 1, maxLength: 30 });
/** The generator runs one key per partition: keep a map of states. */
function kvExecute(steps: { input: KvInput; before: number; after: number; unknown: boolean; applied: boolean }[]): Operation<KvInput, KvOutput>[] {
  const states = new Map<string, string>();
  return steps.map((s, i) => {
    const point = 10 * (i + 1);
    const state = states.get(s.input.key) ?? '';
    const unknown = s.unknown && s.input.f !== 'get';
    // The real object, written independently of the model.
    if (s.input.f !== 'get' && (!unknown || s.applied)) states.set(s.input.key, s.input.f === 'put' ? s.input.value : state + s.input.value);
    const callAt = point - s.before;
    if (unknown) return { process: i, input: s.input, output: { status: 'unknown' as const }, callAt, returnAt: Infinity };
    const output: KvOutput = s.input.f === 'get' ? { status: 'ok', value: state } : { status: 'ok' };
    return { process: i, input: s.input, output, callAt, returnAt: point + s.after };
  });
}

test('property: kv histories from a real sequential run are linearizable; a corrupted get never is', () => {
  fc.assert(
    fc.property(kvSteps, fc.nat(), (steps, pick) => {
      const ops = kvExecute(steps);
      assert.equal(checkOperations(kvModel, ops).verdict, 'linearizable');
      const reads = okReads(ops);
      if (reads.length === 0) return;
      const i = reads[pick % reads.length];
      ops[i] = { ...ops[i], output: { status: 'ok', value: 'never-written' } };
      assert.equal(checkOperations(kvModel, ops).verdict, 'not-linearizable');
    }),
    { numRuns: 300, seed: 4244 },
  );
});

const blockInput: fc.Arbitrary<BlockInput> = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.boolean()).map(([block, isRead]) => (isRead ? { f: 'read', block } : { f: 'write', block, tag: '' }));
const blockSteps = fc.array(fc.tuple(blockInput, overlap).map(([input, o]) => ({ input, ...o })), { minLength: 1, maxLength: 30 });

test('property: block histories with unique tags are linearizable; a read of a never-written tag never is', () => {
  fc.assert(
    fc.property(blockSteps, fc.nat(), (rawSteps, pick) => {
      // Unique tags, as cluster clients write them.
      const steps = rawSteps.map((s, i) => (s.input.f === 'write' ? { ...s, input: { ...s.input, tag: `t${i}` } } : s));
      const states = new Map<string, string | number | null>();
      const ops: Operation<BlockInput, BlockOutput>[] = steps.map((s, i) => {
        const point = 10 * (i + 1);
        const key = String(s.input.block);
        const state = states.get(key) ?? null;
        const unknown = s.unknown && s.input.f === 'write';
        if (s.input.f === 'write' && (!unknown || s.applied)) states.set(key, s.input.tag);
        if (unknown) return { process: i, input: s.input, output: { status: 'unknown' }, callAt: point - s.before, returnAt: Infinity };
        const output: BlockOutput = s.input.f === 'read' ? { status: 'ok', tag: state } : { status: 'ok' };
        return { process: i, input: s.input, output, callAt: point - s.before, returnAt: point + s.after };
      });
      assert.equal(checkOperations(blockModel, ops).verdict, 'linearizable');
      const reads = okReads(ops);
      if (reads.length === 0) return;
      const i = reads[pick % reads.length];
      ops[i] = { ...ops[i], output: { status: 'ok', tag: 'phantom' } };
      assert.equal(checkOperations(blockModel, ops).verdict, 'not-linearizable');
    }),
    { numRuns: 300, seed: 4245 },
  );
});

/** The definition itself: some order of all operations that respects real time and the model. */
function bruteForce(ops: Operation<RegisterInput, RegisterOutput>[]): boolean {
  const n = ops.length;
  const used = new Array<boolean>(n).fill(false);
  const go = (state: RegisterValue, count: number): boolean => {
    if (count === n) return true;
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      // i may come next only if no unplaced operation returned before i was called.
      let allowed = true;
      for (let j = 0; j < n && allowed; j++) if (!used[j] && j !== i && ops[j].returnAt < ops[i].callAt) allowed = false;
      if (!allowed) continue;
      const r = casRegisterModel.step(state, ops[i].input, ops[i].output);
      if (!r.ok) continue;
      used[i] = true;
      if (go(r.newState, count + 1)) return true;
      used[i] = false;
    }
    return false;
  };
  return go(null, 0);
}

const anyRegisterOp: fc.Arbitrary<Operation<RegisterInput, RegisterOutput>> = fc
  .tuple(registerInput, fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 12 }), fc.constantFrom('ok', 'fail', 'unknown'), fc.option(small, { nil: null }))
  .map(([input, callAt, length, status, value]) => {
    if (status === 'unknown' && input.f !== 'read') return { process: 0, input, output: { status: 'unknown' as const }, callAt, returnAt: Infinity };
    if (input.f === 'read') return { process: 0, input, output: { status: 'ok' as const, value }, callAt, returnAt: callAt + length };
    return { process: 0, input, output: { status: input.f === 'cas' && status === 'fail' ? ('fail' as const) : ('ok' as const) }, callAt, returnAt: callAt + length };
  });

test('property: on small arbitrary cas-register histories the search agrees with brute force', () => {
  let convicted = 0;
  fc.assert(
    fc.property(fc.array(anyRegisterOp, { minLength: 1, maxLength: 6 }), (ops) => {
      const expected = bruteForce(ops);
      if (!expected) convicted++;
      assert.equal(checkOperations(casRegisterModel, ops).verdict, expected ? 'linearizable' : 'not-linearizable');
    }),
    { numRuns: 2000, seed: 4246 },
  );
  assert.ok(convicted > 100, `both verdicts are exercised (${convicted} not linearizable)`);
});

test('property: the memo finds exactly the (set, state) pairs added before, in window form', async () => {
  const { LinearizedSet } = await import('../../src/check/search.js');
  const { StateCache, CacheAdd } = await import('../../src/check/state-cache.js');
  const n = 150;
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: n - 1 }), fc.integer({ min: 0, max: 2 })), { minLength: 1, maxLength: 400 }), fc.integer({ min: 0, max: 130 }), (moves, prefill) => {
      const set = new LinearizedSet(n);
      const member = new Array<boolean>(n).fill(false);
      // Start from a run of ones, as a search deep into a history would.
      for (let i = 0; i < prefill; i++) {
        set.add(i, i * 7919);
        member[i] = true;
      }
      const cache = new StateCache<number>((a, b) => a === b);
      const seen = new Set<string>();
      for (const [id, state] of moves) {
        if (member[id]) set.clear(id, id * 7919);
        else set.add(id, id * 7919);
        member[id] = !member[id];
        // The window bounds are canonical.
        const words = Math.ceil(n / 32);
        let lo = 0;
        while (lo < words && set.bits[lo] === 0xffffffff) lo++;
        let hi = words;
        while (hi > 0 && set.bits[hi - 1] === 0) hi--;
        assert.equal(set.lo, lo);
        assert.equal(set.hi, hi);
        const name = `${member.map((m) => (m ? 1 : 0)).join('')}/${state}`;
        // A deliberately weak key, so that unequal pairs share buckets.
        const r = cache.add(set.hash & 7, set.bits, set.lo, set.hi, state);
        assert.equal(r, seen.has(name) ? CacheAdd.Present : CacheAdd.Added);
        seen.add(name);
      }
      assert.equal(cache.size, seen.size);
    }),
    { numRuns: 200, seed: 4247 },
  );
});
