/**
 * Registers: `register` (read/write) and `cas-register` (read/write/compare-and-set), each
 * optionally keyed (an input with `key` belongs to that key's register; the history is
 * partitioned by key). Every register starts as null ("never written").
 *
 * Outcomes: `ok` is a definite completion; `fail` (only for CAS) says the CAS definitely did
 * not apply, which constrains the state (it was not `from`); `unknown` may or may not have
 * taken effect and is accepted from any state.
 */
import { hashValue } from '../hash.js';
import { partitionBy, stepRejected, type Model, type Operation, type StepResult } from '../model.js';

export type RegisterValue = number | string | null;

export type RegisterInput =
  | { readonly f: 'read'; readonly key?: string }
  | { readonly f: 'write'; readonly key?: string; readonly value: RegisterValue }
  | { readonly f: 'cas'; readonly key?: string; readonly from: RegisterValue; readonly to: RegisterValue };

export type OutcomeStatus = 'ok' | 'fail' | 'unknown';

export interface RegisterOutput {
  readonly status: OutcomeStatus;
  /** The value a read returned (for `ok` reads). */
  readonly value?: RegisterValue;
}

export const okOutput: RegisterOutput = Object.freeze({ status: 'ok' });
export const failOutput: RegisterOutput = Object.freeze({ status: 'fail' });
export const unknownOutput: RegisterOutput = Object.freeze({ status: 'unknown' });

export function showValue(v: RegisterValue | undefined): string {
  if (v === null || v === undefined) return 'nil';
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/**
 * In a history where only reads observe the state, an unknown-outcome write of a value that
 * no read returned can be removed: in any linearization no read sits between it and the next
 * write (that read would have returned its value), so removing it changes no read; and the
 * smaller history's linearizations extend by placing it last (its return is +infinity).
 */
export function dropUnobservedUnknownWrites<I, O extends { readonly status: string }>(
  ops: Operation<I, O>[],
  writtenValue: (op: Operation<I, O>) => RegisterValue | undefined,
  readValue: (op: Operation<I, O>) => RegisterValue | undefined,
): Operation<I, O>[] {
  const seen = new Set<RegisterValue>();
  for (const op of ops) {
    const v = readValue(op);
    if (v !== undefined) seen.add(v);
  }
  return ops.filter((op) => {
    if (op.output.status !== 'unknown') return true;
    const v = writtenValue(op);
    return v === undefined || seen.has(v);
  });
}

function accept<S>(s: S): StepResult<S> {
  return { ok: true, newState: s };
}

function makeRegisterModel(name: 'register' | 'cas-register', allowCas: boolean): Model<RegisterValue, RegisterInput, RegisterOutput> {
  return {
    name,
    init: () => null,
    step(state, input, output) {
      switch (input.f) {
        case 'read':
          if (output.status === 'unknown') return accept(state);
          return output.status === 'ok' && output.value === state ? accept(state) : stepRejected;
        case 'write':
          return output.status === 'fail' ? stepRejected : accept(input.value);
        case 'cas': {
          if (!allowCas) return stepRejected;
          const matches = state === input.from;
          if (output.status === 'ok') return matches ? accept(input.to) : stepRejected;
          if (output.status === 'fail') return matches ? stepRejected : accept(state);
          // Unknown: linearized here it takes effect iff it matches; "never took effect" is
          // the same as being linearized after everything else, which the search also tries.
          return accept(matches ? input.to : state);
        }
      }
    },
    partition(ops: readonly Operation<RegisterInput, RegisterOutput>[]) {
      return partitionBy(ops, (input) => input.key ?? '');
    },
    simplify(ops) {
      // Only reads observe the state here; a CAS (even a failed one) observes it too, so
      // partitions with any CAS are left alone.
      if (ops.some((op) => op.input.f === 'cas')) return ops;
      return dropUnobservedUnknownWrites(ops, (op) => (op.input.f === 'write' ? op.input.value : undefined), (op) =>
        op.input.f === 'read' && op.output.status === 'ok' ? op.output.value ?? null : undefined,
      );
    },
    readOnly: (input, output) => (input.f === 'read' && output.status === 'ok') || (input.f === 'cas' && output.status === 'fail'),
    hash: hashValue,
    equal: (a, b) => a === b,
    describeOperation(input, output) {
      const key = input.key === undefined ? '' : `[${JSON.stringify(input.key)}] `;
      const outcome = output.status === 'ok' ? '' : ` (${output.status})`;
      switch (input.f) {
        case 'read':
          return `${key}read -> ${output.status === 'ok' ? showValue(output.value) : '?'}${outcome}`;
        case 'write':
          return `${key}write ${showValue(input.value)}${outcome}`;
        case 'cas':
          return `${key}cas ${showValue(input.from)} -> ${showValue(input.to)}${outcome}`;
      }
    },
    describeState: (s) => showValue(s),
    failedOutput: (input) => (input.f === 'cas' ? failOutput : null),
    unknownOutput: (input) => (input.f === 'read' ? null : unknownOutput),
  };
}

/** A read/write register (keyed registers partition by key). */
export const registerModel = makeRegisterModel('register', false);
/** A compare-and-set register with unknown-outcome operations (keyed registers partition by key). */
export const casRegisterModel = makeRegisterModel('cas-register', true);
