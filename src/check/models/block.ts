/**
 * Blocks of a volume as registers of unique write tags. Clients write a tag (unique per
 * write) into a block and read tags back; a block never written reads as null. Blocks are
 * independent, so the history is partitioned by block. See src/check/README.md for the
 * history file format.
 */
import { hashValue } from '../hash.js';
import { partitionBy, stepRejected, type Model, type Operation } from '../model.js';
import { dropUnobservedUnknownWrites, showValue, type OutcomeStatus } from './cas-register.js';

export type BlockId = number | string;
export type BlockTag = number | string | null;

export type BlockInput =
  | { readonly f: 'read'; readonly block: BlockId }
  /** `tag: null` zeroes the block (TRIM, WRITE_ZEROES): it reads as never written again. */
  | { readonly f: 'write'; readonly block: BlockId; readonly tag: BlockTag };

export interface BlockOutput {
  readonly status: Exclude<OutcomeStatus, 'fail'>;
  /** The tag a read found (null: never written). */
  readonly tag?: BlockTag;
}

export const blockOk: BlockOutput = Object.freeze({ status: 'ok' });
export const blockUnknown: BlockOutput = Object.freeze({ status: 'unknown' });

export const blockModel: Model<BlockTag, BlockInput, BlockOutput> = {
  name: 'block',
  init: () => null,
  step(state, input, output) {
    if (input.f === 'write') return { ok: true, newState: input.tag };
    if (output.status === 'unknown') return { ok: true, newState: state };
    return output.tag === state ? { ok: true, newState: state } : stepRejected;
  },
  partition(ops: readonly Operation<BlockInput, BlockOutput>[]) {
    return partitionBy(ops, (input) => String(input.block));
  },
  simplify(ops) {
    return dropUnobservedUnknownWrites(ops, (op) => (op.input.f === 'write' ? op.input.tag : undefined), (op) =>
      op.input.f === 'read' && op.output.status === 'ok' ? op.output.tag ?? null : undefined,
    );
  },
  readOnly: (input, output) => input.f === 'read' && output.status === 'ok',
  hash: hashValue,
  equal: (a, b) => a === b,
  describeOperation(input, output) {
    const suffix = output.status === 'unknown' ? ' (unknown)' : '';
    if (input.f === 'write') {
      return input.tag === null ? `zero block ${input.block}${suffix}` : `write block ${input.block} tag ${showValue(input.tag)}${suffix}`;
    }
    return `read block ${input.block} -> ${output.status === 'ok' ? showValue(output.tag ?? null) : '?'}${suffix}`;
  },
  describeState: (s) => showValue(s),
  failedOutput: () => null,
  unknownOutput: (input) => (input.f === 'read' ? null : blockUnknown),
};
