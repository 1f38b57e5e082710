import { AssertionFailed } from './errors.js';

/** Asserts an invariant. A failure is a bug in raftblock, so it throws AssertionFailed. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailed(message);
}

/** Marks a switch as exhaustive. */
export function unreachable(value: never, what = 'value'): never {
  throw new AssertionFailed(`unreachable ${what}: ${String(value)}`);
}
