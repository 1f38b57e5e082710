/**
 * Key-value map of strings, every key initially ''. get/put/append per key; keys are
 * independent registers, so the history is partitioned by key and each partition's state is
 * one string.
 */
import { continueStringHash, emptyStringHash, hashString } from '../hash.js';
import { partitionBy, stepRejected, type Model, type Operation } from '../model.js';
import type { OutcomeStatus } from './cas-register.js';

export type KvInput =
  | { readonly f: 'get'; readonly key: string }
  | { readonly f: 'put'; readonly key: string; readonly value: string }
  | { readonly f: 'append'; readonly key: string; readonly value: string };

export interface KvOutput {
  readonly status: Exclude<OutcomeStatus, 'fail'>;
  /** What a get returned. */
  readonly value?: string;
}

export const kvOk: KvOutput = Object.freeze({ status: 'ok' });
export const kvUnknown: KvOutput = Object.freeze({ status: 'unknown' });

/**
 * A key's value with its hash, kept incrementally: an append extends the hash over the suffix
 * only, instead of rehashing (and flattening) an ever longer string at every step.
 */
export interface KvState {
  readonly value: string;
  readonly hash: number;
}

const emptyState: KvState = Object.freeze({ value: '', hash: emptyStringHash });

export const kvModel: Model<KvState, KvInput, KvOutput> = {
  name: 'kv',
  init: () => emptyState,
  step(state, input, output) {
    switch (input.f) {
      case 'get':
        if (output.status === 'unknown') return { ok: true, newState: state };
        return output.value === state.value ? { ok: true, newState: state } : stepRejected;
      case 'put':
        return { ok: true, newState: { value: input.value, hash: hashString(input.value) } };
      case 'append':
        return { ok: true, newState: { value: state.value + input.value, hash: continueStringHash(state.hash, input.value) } };
    }
  },
  partition(ops: readonly Operation<KvInput, KvOutput>[]) {
    return partitionBy(ops, (input) => input.key);
  },
  readOnly: (input, output) => input.f === 'get' && output.status === 'ok',
  hash: (s) => s.hash,
  equal: (a, b) => a === b || (a.hash === b.hash && a.value === b.value),
  describeOperation(input, output) {
    const suffix = output.status === 'unknown' ? ' (unknown)' : '';
    switch (input.f) {
      case 'get':
        return `get ${JSON.stringify(input.key)} -> ${output.status === 'ok' ? JSON.stringify(output.value ?? '') : '?'}${suffix}`;
      case 'put':
        return `put ${JSON.stringify(input.key)} ${JSON.stringify(input.value)}${suffix}`;
      case 'append':
        return `append ${JSON.stringify(input.key)} ${JSON.stringify(input.value)}${suffix}`;
    }
  },
  describeState: (s) => JSON.stringify(s.value),
  // A failed operation definitely did not happen and returned nothing: it constrains nothing.
  failedOutput: () => null,
  unknownOutput: (input) => (input.f === 'get' ? null : kvUnknown),
};
