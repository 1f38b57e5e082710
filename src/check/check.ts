/**
 * Checks a whole history: splits it into the model's partitions, searches each (smallest
 * first, so the first failure found is the smallest failing partition), and reports.
 */
import { InvalidArgument } from '../common/errors.js';
import type { Model, Operation, Partition } from './model.js';
import { BudgetMeter, searchPartition, type CheckBudget, type UnknownReason, type Verdict } from './search.js';

export interface PartitionOutcome {
  readonly key: string;
  readonly operations: number;
  /** Operations the model's `simplify` removed before the search. */
  readonly simplifiedAway: number;
  readonly verdict: Verdict;
  readonly unknownBecause?: UnknownReason;
  readonly steps: number;
  readonly cacheEntries: number;
}

/** Why a partition is not linearizable, in terms of its operations. */
export interface FailureReport<I, O> {
  readonly key: string;
  /** Every operation of the failing partition, in call order. */
  readonly operations: Operation<I, O>[];
  /** The longest prefix the search could linearize, in linearization order. */
  readonly longestPrefix: Operation<I, O>[];
  /** The model state after that prefix, described. */
  readonly stateAfterPrefix: string;
  /** The operation that could not be linearized before it returned, after that prefix. */
  readonly stuck: Operation<I, O>;
  /** Operations invoked but not yet linearized at that point (the candidates). */
  readonly pending: Operation<I, O>[];
}

export interface CheckResult<I, O> {
  readonly verdict: Verdict;
  readonly model: string;
  readonly operations: number;
  readonly partitionCount: number;
  /** Partitions searched, in the order searched (ascending size); may stop at the first failure. */
  readonly partitions: PartitionOutcome[];
  /** The smallest failing partition, when not linearizable. */
  readonly failure?: FailureReport<I, O>;
  /** When `unknown`: the limits that ran out. */
  readonly unknownBecause?: UnknownReason[];
  readonly steps: number;
}

export interface CheckOptions {
  /** Keep searching the other partitions after one fails (default false). */
  readonly allPartitions?: boolean;
}

function validate<I, O>(ops: readonly Operation<I, O>[]): void {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (typeof op.callAt !== 'number' || Number.isNaN(op.callAt) || !Number.isFinite(op.callAt)) {
      throw new InvalidArgument(`operation ${i}: call time must be a finite number`);
    }
    if (typeof op.returnAt !== 'number' || Number.isNaN(op.returnAt) || op.returnAt < op.callAt) {
      throw new InvalidArgument(`operation ${i}: return time must be a number not before its call (or Infinity)`);
    }
  }
}

/**
 * Decides whether `ops` is linearizable under `model`, within `budget`.
 * `unknown` means the budget ran out before every partition was decided and none failed.
 */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  budget: CheckBudget = {},
  options: CheckOptions = {},
): CheckResult<I, O> {
  validate(ops);
  const meter = new BudgetMeter(budget);
  const parts: Partition<I, O>[] = model.partition ? model.partition(ops) : [{ key: '', operations: ops.slice() }];
  parts.sort((a, b) => a.operations.length - b.operations.length || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

  const outcomes: PartitionOutcome[] = [];
  let failure: FailureReport<I, O> | undefined;
  const reasons = new Set<UnknownReason>();
  for (const part of parts) {
    const searched = model.simplify ? model.simplify(part.operations) : part.operations;
    const simplifiedAway = part.operations.length - searched.length;
    if (meter.expired) {
      reasons.add(meter.expiredBy ?? 'steps');
      outcomes.push({ key: part.key, operations: part.operations.length, simplifiedAway, verdict: 'unknown', unknownBecause: meter.expiredBy, steps: 0, cacheEntries: 0 });
      continue;
    }
    const r = searchPartition(model, searched, meter);
    outcomes.push({
      key: part.key,
      operations: part.operations.length,
      simplifiedAway,
      verdict: r.verdict,
      ...(r.unknownBecause !== undefined ? { unknownBecause: r.unknownBecause } : {}),
      steps: r.steps,
      cacheEntries: r.cacheEntries,
    });
    if (r.unknownBecause !== undefined) reasons.add(r.unknownBecause);
    if (r.verdict === 'not-linearizable' && r.failure !== undefined && failure === undefined) {
      const f = r.failure;
      const pick = (i: number): Operation<I, O> => searched[i];
      let state = model.init();
      for (const i of f.longestPrefix) state = model.step(state, pick(i).input, pick(i).output).newState;
      failure = {
        key: part.key,
        operations: searched.slice().sort((a, b) => a.callAt - b.callAt),
        longestPrefix: f.longestPrefix.map(pick),
        stateAfterPrefix: model.describeState(state),
        stuck: pick(f.stuck),
        pending: f.pending.map(pick),
      };
      if (!options.allPartitions) break;
    }
  }
  const verdict: Verdict = failure !== undefined ? 'not-linearizable' : reasons.size > 0 ? 'unknown' : 'linearizable';
  return {
    verdict,
    model: model.name,
    operations: ops.length,
    partitionCount: parts.length,
    partitions: outcomes,
    ...(failure !== undefined ? { failure } : {}),
    ...(verdict === 'unknown' ? { unknownBecause: [...reasons] } : {}),
    steps: meter.stepsUsed,
  };
}

/** Most operations of a failing partition listed in a report. */
const maxListed = 60;
const maxPrefixListed = 10;

function showTime(t: number): string {
  return t === Infinity ? '∞' : String(t);
}

/** One operation as a report line: process, description, [call, return]. */
export function describeOperation<I, O>(model: Model<unknown, I, O>, op: Operation<I, O>): string {
  return `p${op.process} ${model.describeOperation(op.input, op.output)}  [${showTime(op.callAt)}, ${showTime(op.returnAt)}]`;
}

/** A readable report of a check: the verdict first, then what backs it. */
export function describeResult<I, O>(model: Model<unknown, I, O>, result: CheckResult<I, O>): string {
  const lines: string[] = [result.verdict];
  const decided = result.partitions.filter((p) => p.verdict !== 'unknown').length;
  lines.push(
    `model ${result.model}: ${result.operations} operations in ${result.partitionCount} partition(s); ` +
      `${decided} decided; ${result.steps} search steps`,
  );
  const f = result.failure;
  if (f !== undefined) {
    const where = f.key === '' ? 'the history' : `partition ${JSON.stringify(f.key)}`;
    lines.push(`smallest failing partition: ${where} (${f.operations.length} operations)`);
    lines.push(`longest linearizable prefix: ${f.longestPrefix.length} operations, leaving state ${f.stateAfterPrefix}; its last ones:`);
    for (const op of f.longestPrefix.slice(-maxPrefixListed)) lines.push(`  ${describeOperation(model, op)}`);
    lines.push(`cannot be linearized before it returns:`);
    lines.push(`  ${describeOperation(model, f.stuck)}`);
    const others = f.pending.filter((op) => op !== f.stuck);
    if (others.length > 0) {
      lines.push(`also pending then (no order of them explains it):`);
      for (const op of others) lines.push(`  ${describeOperation(model, op)}`);
    }
    // The operations involved: every one that overlaps the interval from the earliest
    // pending call to the stuck operation's return.
    const from = Math.min(f.stuck.callAt, ...f.pending.map((op) => op.callAt));
    const to = f.stuck.returnAt;
    const involved = f.operations.filter((op) => op.callAt <= to && op.returnAt >= from);
    const shown = involved.slice(0, maxListed);
    lines.push(`operations overlapping [${showTime(from)}, ${showTime(to)}]${involved.length > shown.length ? ` (first ${maxListed} of ${involved.length})` : ''}:`);
    for (const op of shown) lines.push(`  ${op === f.stuck ? '*' : ' '}${describeOperation(model, op)}`);
  } else if (result.verdict === 'unknown') {
    const undecided = result.partitions.filter((p) => p.verdict === 'unknown');
    lines.push(
      `${(result.unknownBecause ?? []).join(' and ')} budget exhausted before ${undecided.length} partition(s) were decided; ` +
        `none decided fails`,
    );
  }
  return lines.join('\n') + '\n';
}
