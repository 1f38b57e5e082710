/**
 * The contract between the linearizability search and a sequential specification.
 *
 * A model is a pure sequential object: `init` gives the state before any operation, `step`
 * says whether an operation with this input could have returned this output from `state`, and
 * what the state is afterwards. `partition` splits a history into independent sub-histories
 * (P-compositionality: a history is linearizable iff each partition is), which is what makes
 * large histories tractable. `hash`/`equal` let the search memoize (linearized set, state).
 */

/** One completed (or unknown-outcome) operation of a history. */
export interface Operation<I, O> {
  /** The client (Jepsen "process") that issued it; one operation at a time per client. */
  readonly process: number;
  readonly input: I;
  /** What it returned. For an unknown outcome, the model's "unknown" output. */
  readonly output: O;
  /** Invocation time (any monotonic unit; only the order matters). */
  readonly callAt: number;
  /** Completion time; `Infinity` when the outcome is unknown (it may take effect any time after the call). */
  readonly returnAt: number;
}

export interface StepResult<S> {
  readonly ok: boolean;
  /** The state after the operation; meaningless when `ok` is false. */
  readonly newState: S;
}

/** A named independent sub-history. */
export interface Partition<I, O> {
  /** What the partition is (a key, a block); '' when the model does not partition. */
  readonly key: string;
  readonly operations: Operation<I, O>[];
}

export interface Model<S, I, O> {
  readonly name: string;
  init(): S;
  step(state: S, input: I, output: O): StepResult<S>;
  /** Splits into independent sub-histories; absent means one partition. */
  partition?(operations: readonly Operation<I, O>[]): Partition<I, O>[];
  /**
   * Optionally drops operations of one partition that cannot change its verdict (an
   * unknown-outcome write whose value nobody observed can always be placed last). Must keep
   * the verdict exactly; it only makes the search smaller.
   */
  simplify?(operations: Operation<I, O>[]): Operation<I, O>[];
  /**
   * True when the operation never changes the state, from any state it fits (a read, a
   * failed CAS). The search then never tries alternatives to it (see search.ts). Absent:
   * nothing is read-only.
   */
  readOnly?(input: I, output: O): boolean;
  /** A 32-bit hash of a state, consistent with `equal`. */
  hash(state: S): number;
  equal(a: S, b: S): boolean;
  describeOperation(input: I, output: O): string;
  describeState(state: S): string;
  /**
   * What a definite failure (`:fail`) of an operation with this input means: the output the
   * model checks (a failed CAS: "the value was not A"), or null when the operation constrains
   * nothing and is dropped (a failed read, a failed write).
   */
  failedOutput(input: I): O | null;
  /**
   * What an unknown outcome (`:info`, timed out, still pending at the end) means: an output
   * the model accepts whether or not the operation took effect, or null to drop the operation
   * (a read that never answered constrains nothing).
   */
  unknownOutput(input: I): O | null;
}

/** Models are heterogeneous; code that only shuttles them around uses this. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyModel = Model<any, any, any>;

/** The shared "this step is impossible" result, so rejecting allocates nothing. */
export const stepRejected: StepResult<never> = Object.freeze({ ok: false, newState: undefined as never });

/** Groups operations by a key function, keeping each group in the given order. */
export function partitionBy<I, O>(
  operations: readonly Operation<I, O>[],
  keyOf: (input: I) => string,
): Partition<I, O>[] {
  const groups = new Map<string, Operation<I, O>[]>();
  for (const op of operations) {
    const key = keyOf(op.input);
    let group = groups.get(key);
    if (group === undefined) {
      group = [];
      groups.set(key, group);
    }
    group.push(op);
  }
  return [...groups].map(([key, ops]) => ({ key, operations: ops }));
}
