/**
 * The linearizability checker's programmatic face. Pure: no I/O, no clocks.
 *
 *   const h = new HistoryRecorder(casRegisterModel);
 *   h.invoke(1, { f: 'write', value: 3 }); h.ok(1, okOutput);
 *   h.invoke(2, { f: 'read' });            h.ok(2, { status: 'ok', value: 3 });
 *   const r = checkOperations(casRegisterModel, h.operations(), { maxSteps: 1_000_000 });
 *   r.verdict === 'linearizable'
 */
export type { Model, Operation, Partition, StepResult, AnyModel } from './model.js';
export { partitionBy, stepRejected } from './model.js';
export {
  BudgetMeter,
  searchPartition,
  defaultMaxCacheBytes,
  type CheckBudget,
  type Verdict,
  type UnknownReason,
  type SearchResult,
  type SearchFailure,
} from './search.js';
export {
  checkOperations,
  describeResult,
  describeOperation,
  type CheckResult,
  type CheckOptions,
  type FailureReport,
  type PartitionOutcome,
} from './check.js';
export { HistoryRecorder } from './history.js';
export {
  registerModel,
  casRegisterModel,
  okOutput,
  failOutput,
  unknownOutput,
  type RegisterValue,
  type RegisterInput,
  type RegisterOutput,
  type OutcomeStatus,
} from './models/cas-register.js';
export { kvModel, kvOk, kvUnknown, type KvInput, type KvOutput, type KvState } from './models/kv.js';
export { blockModel, blockOk, blockUnknown, type BlockInput, type BlockOutput, type BlockId, type BlockTag } from './models/block.js';
