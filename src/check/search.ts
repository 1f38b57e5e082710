/**
 * Wing & Gong's search for a linearization of one partition, with Lowe's memoization:
 * a (set of linearized operations, model state) pair that was already explored is never
 * explored again. Call and return events sit in one doubly linked list ordered by time;
 * linearizing an operation "lifts" its call and return out of the list, backtracking
 * "unlifts" them, so the list always holds exactly the operations not yet linearized.
 *
 * The search is pure: it never reads a clock. Its only way out besides a verdict is the
 * step budget or the caller's `deadlineCheck`, polled every `pollEverySteps` steps.
 */
import { assert } from '../common/assert.js';
import { mix32 } from './hash.js';
import type { Model, Operation } from './model.js';
import { CacheAdd, StateCache } from './state-cache.js';

export type Verdict = 'linearizable' | 'not-linearizable' | 'unknown';

/** How much work a check may do. Shared by every partition of one check. */
export interface CheckBudget {
  /** Most search steps in total; unlimited when absent. */
  maxSteps?: number;
  /** Called every `pollEverySteps` steps; returning true ends the check with `unknown`. */
  deadlineCheck?: () => boolean;
  /** How often to call `deadlineCheck` (default 1024 steps). */
  pollEverySteps?: number;
  /** Most bytes one partition's memo may hold (default 512 MiB); past it that partition is `unknown`. */
  maxCacheBytes?: number;
}

/** Why a verdict is `unknown`. */
export type UnknownReason = 'steps' | 'deadline' | 'memory';

export const defaultMaxCacheBytes = 512 * 1024 * 1024;

/** Mutable account of a budget while a check runs. */
export class BudgetMeter {
  stepsUsed = 0;
  expired = false;
  /** Set when `expired`: which limit ran out. */
  expiredBy: UnknownReason | undefined;
  readonly maxCacheBytes: number;
  private readonly maxSteps: number;
  private readonly deadlineCheck: (() => boolean) | undefined;
  readonly pollEverySteps: number;

  constructor(budget: CheckBudget = {}) {
    this.maxSteps = budget.maxSteps ?? Infinity;
    this.deadlineCheck = budget.deadlineCheck;
    this.pollEverySteps = Math.max(1, budget.pollEverySteps ?? 1024);
    this.maxCacheBytes = budget.maxCacheBytes ?? defaultMaxCacheBytes;
    assert(this.maxSteps >= 0, 'maxSteps must be >= 0');
  }

  /** Accounts `steps` more steps; true when the budget is exhausted. */
  charge(steps: number): boolean {
    this.stepsUsed += steps;
    if (this.expired) return true;
    if (this.stepsUsed >= this.maxSteps) this.expiredBy = 'steps';
    else if (this.deadlineCheck !== undefined && this.deadlineCheck()) this.expiredBy = 'deadline';
    this.expired = this.expiredBy !== undefined;
    return this.expired;
  }
}

/** Where the search got furthest before it had to give up on a non-linearizable partition. */
export interface SearchFailure {
  /** Indexes (into the partition's operations) of the longest linearizable prefix, in order. */
  longestPrefix: number[];
  /** The operation whose return was reached with no way to linearize it after that prefix. */
  stuck: number;
  /** Operations that were invoked but not linearized at that point (the candidates tried). */
  pending: number[];
}

export interface SearchResult {
  verdict: Verdict;
  steps: number;
  unknownBecause?: UnknownReason;
  /** A full linearization (operation indexes in order) when linearizable. */
  linearization?: number[];
  failure?: SearchFailure;
  /** Distinct (linearized set, state) pairs memoized. */
  cacheEntries: number;
}

/** At most this many pending operations are kept for a failure report. */
const maxPendingReported = 32;

/**
 * The set of linearized operations: a bitset, the XOR of its members' hashes, and the
 * window bounds the memo stores: every word below `lo` is all ones, every word from `hi` on
 * is zero.
 */
export class LinearizedSet {
  readonly bits: Uint32Array;
  hash = 0;
  lo = 0;
  hi = 0;
  private readonly words: number;

  constructor(n: number) {
    this.words = (n + 31) >>> 5;
    this.bits = new Uint32Array(this.words);
  }

  add(id: number, idHash: number): void {
    const w = id >>> 5;
    const bits = this.bits;
    bits[w] |= 1 << (id & 31);
    this.hash = (this.hash ^ idHash) >>> 0;
    if (w >= this.hi) this.hi = w + 1;
    if (w === this.lo) {
      let lo = w;
      while (lo < this.words && bits[lo] === 0xffffffff) lo++;
      this.lo = lo;
    }
  }

  clear(id: number, idHash: number): void {
    const w = id >>> 5;
    const bits = this.bits;
    bits[w] &= ~(1 << (id & 31));
    this.hash = (this.hash ^ idHash) >>> 0;
    if (w < this.lo) this.lo = w;
    if (w === this.hi - 1) {
      let hi = this.hi;
      while (hi > 0 && bits[hi - 1] === 0) hi--;
      this.hi = hi;
    }
  }
}

/**
 * Searches for a linearization of `ops` (all of one partition) under `model`.
 * Unknown-outcome operations carry `returnAt = Infinity`: their return events sort last.
 */
export function searchPartition<S, I, O>(
  model: Model<S, I, O>,
  given: readonly Operation<I, O>[],
  meter: BudgetMeter,
): SearchResult {
  const n = given.length;
  if (n === 0) return { verdict: 'linearizable', steps: 0, linearization: [], cacheEntries: 0 };
  // Number operations in call order: the linearized set is then nearly always a run of
  // ones followed by a short window, which is what the memo stores (see state-cache.ts).
  const byCall = Array.from({ length: n }, (_, i) => i).sort((a, b) => given[a].callAt - given[b].callAt || a - b);
  const ops = byCall.map((i) => given[i]);
  const original = (ids: ArrayLike<number>): number[] => Array.from(ids, (id) => byCall[id]);

  // Entries: 0 is the head sentinel, 2n+1 the tail sentinel; the rest are call and return
  // events. entryOp[e] is the operation of entry e; matchOf[e] is the return of a call, -1 for a return.
  const head = 0;
  const tail = 2 * n + 1;
  const order = new Int32Array(2 * n);
  const eventTime = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    const op = ops[i];
    assert(op.returnAt >= op.callAt, `operation ${i} returns (${op.returnAt}) before its call (${op.callAt})`);
    order[2 * i] = 2 * i;
    order[2 * i + 1] = 2 * i + 1;
    eventTime[2 * i] = op.callAt;
    eventTime[2 * i + 1] = op.returnAt;
  }
  // Time order; at equal times calls come before returns, so the operations count as
  // concurrent (never a false conviction); then by operation for determinism.
  order.sort((a, b) => {
    const dt = eventTime[a] - eventTime[b];
    if (dt !== 0 && !Number.isNaN(dt)) return dt;
    const ka = a & 1;
    const kb = b & 1;
    if (ka !== kb) return ka - kb;
    return a - b;
  });
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  const entryOp = new Int32Array(2 * n + 2).fill(-1);
  const matchOf = new Int32Array(2 * n + 2).fill(-1);
  const returnEntryOf = new Int32Array(n);
  for (let pos = 0; pos < 2 * n; pos++) {
    const e = pos + 1;
    const ev = order[pos];
    entryOp[e] = ev >>> 1;
    if ((ev & 1) === 1) returnEntryOf[ev >>> 1] = e;
    prev[e] = e - 1;
    next[e] = e + 1;
  }
  next[head] = 1;
  prev[tail] = 2 * n;
  for (let pos = 0; pos < 2 * n; pos++) {
    const e = pos + 1;
    if ((order[pos] & 1) === 0) matchOf[e] = returnEntryOf[entryOp[e]];
  }

  // Per-operation hash contributions; the linearized set's hash is their XOR, kept incrementally.
  const opHash = new Uint32Array(n);
  for (let i = 0; i < n; i++) opHash[i] = mix32((i + 1) * 0x9e3779b1);

  const readOnly = new Uint8Array(n);
  if (model.readOnly !== undefined) {
    for (let i = 0; i < n; i++) readOnly[i] = model.readOnly(ops[i].input, ops[i].output) ? 1 : 0;
  }

  const set = new LinearizedSet(n);
  const bits = set.bits;
  const cache = new StateCache<S>((a, b) => model.equal(a, b), meter.maxCacheBytes);

  const stackCall = new Int32Array(n);
  const stackState: S[] = new Array<S>(n);
  let depth = 0;
  let state = model.init();

  // The deepest dead end so far. Its prefix is kept incrementally: the stack below
  // `lowWater` has not changed since the last snapshot, so only the part above it is copied
  // (amortized O(1) per step instead of O(depth) per new record).
  const bestPrefix = new Int32Array(n);
  let bestDepth = -1;
  let bestStuck = -1;
  let bestPending: number[] = [];
  let lowWater = 0;

  const lift = (e: number): void => {
    next[prev[e]] = next[e];
    prev[next[e]] = prev[e];
    const m = matchOf[e];
    next[prev[m]] = next[m];
    prev[next[m]] = prev[m];
  };
  const unlift = (e: number): void => {
    const m = matchOf[e];
    next[prev[m]] = m;
    prev[next[m]] = m;
    next[prev[e]] = e;
    prev[next[e]] = e;
  };
  const poll = meter.pollEverySteps;
  let steps = 0;
  let sincePoll = 0;
  let e = head;
  // `fresh`: the search just reached a new (set, state) node. `dead`: the node has no way
  // forward and the search must backtrack.
  let fresh = true;
  let dead = false;
  while (next[head] !== tail) {
    if (++sincePoll >= poll) {
      steps += sincePoll;
      const exhausted = meter.charge(sincePoll);
      sincePoll = 0;
      if (exhausted) return { verdict: 'unknown', steps, unknownBecause: meter.expiredBy, cacheEntries: cache.size };
    }

    if (dead) {
      dead = false;
      // Backtrack. A read-only operation needs no alternatives (see `fresh` below): if
      // nothing extends the prefix with it, nothing extends the prefix without it either.
      for (;;) {
        if (depth === 0) {
          steps += sincePoll;
          meter.charge(sincePoll);
          assert(bestStuck >= 0, 'a failed search records where it failed');
          const failure: SearchFailure = {
            longestPrefix: original(bestPrefix.subarray(0, bestDepth)),
            stuck: byCall[bestStuck],
            pending: original(bestPending),
          };
          return { verdict: 'not-linearizable', steps, failure, cacheEntries: cache.size };
        }
        depth--;
        if (depth < lowWater) lowWater = depth;
        const c = stackCall[depth];
        state = stackState[depth];
        stackState[depth] = undefined as S;
        const id = entryOp[c];
        set.clear(id, opHash[id]);
        unlift(c);
        if (readOnly[id] === 0) {
          e = next[c];
          break;
        }
      }
      continue;
    }

    if (fresh) {
      fresh = false;
      e = next[head];
      // A read-only candidate that fits the state decides the node by itself: any
      // linearization from here that places it later can place it now instead (it changes
      // no state, and everything that had to precede it already does). So take it without
      // branching; and if that successor was explored before, this node fails too.
      let took = false;
      for (let p = next[head]; matchOf[p] >= 0; p = next[p]) {
        sincePoll++;
        const id = entryOp[p];
        if (readOnly[id] === 0) continue;
        const op = ops[id];
        if (!model.step(state, op.input, op.output).ok) continue;
        set.add(id, opHash[id]);
        const added = cache.add(mix32((set.hash ^ Math.imul(model.hash(state), 0x27d4eb2d)) | 0), bits, set.lo, set.hi, state);
        if (added === CacheAdd.Added) {
          stackCall[depth] = p;
          stackState[depth] = state;
          depth++;
          lift(p);
          fresh = true;
        } else if (added === CacheAdd.Present) {
          set.clear(id, opHash[id]);
          dead = true;
        } else {
          steps += sincePoll;
          meter.charge(sincePoll);
          return { verdict: 'unknown', steps, unknownBecause: 'memory', cacheEntries: cache.size };
        }
        took = true;
        break;
      }
      if (took) continue;
    }

    const m = matchOf[e];
    if (m >= 0) {
      // A call: try to linearize its operation now. Read-only ones do not fit (they would
      // have been taken when this node was fresh).
      const id = entryOp[e];
      if (readOnly[id] === 1) {
        e = next[e];
        continue;
      }
      const op = ops[id];
      const r = model.step(state, op.input, op.output);
      if (r.ok) {
        set.add(id, opHash[id]);
        const key = mix32((set.hash ^ Math.imul(model.hash(r.newState), 0x27d4eb2d)) | 0);
        const added = cache.add(key, bits, set.lo, set.hi, r.newState);
        if (added === CacheAdd.Added) {
          stackCall[depth] = e;
          stackState[depth] = state;
          depth++;
          state = r.newState;
          lift(e);
          fresh = true;
        } else if (added === CacheAdd.Present) {
          set.clear(id, opHash[id]);
          e = next[e];
        } else {
          steps += sincePoll;
          meter.charge(sincePoll);
          return { verdict: 'unknown', steps, unknownBecause: 'memory', cacheEntries: cache.size };
        }
      } else {
        e = next[e];
      }
    } else {
      // A return whose operation is not linearized: the prefix cannot be extended past it.
      if (depth > bestDepth) {
        for (let d = lowWater; d < depth; d++) bestPrefix[d] = entryOp[stackCall[d]];
        bestDepth = depth;
        lowWater = depth;
        bestStuck = entryOp[e];
        bestPending = [];
        for (let p = next[head]; p !== e && bestPending.length < maxPendingReported; p = next[p]) {
          if (matchOf[p] >= 0) bestPending.push(entryOp[p]);
        }
      }
      dead = true;
    }
  }
  steps += sincePoll;
  meter.charge(sincePoll);
  const linearization: number[] = [];
  for (let d = 0; d < depth; d++) linearization.push(byCall[entryOp[stackCall[d]]]);
  return { verdict: 'linearizable', steps, linearization, cacheEntries: cache.size };
}
