import { NotSupported } from '../common/errors.js';
import type { WalEntry, WalHardState, WalOptions, WalRecoveryReport, WalSnapshotMeta } from './types.js';

/**
 * The write-ahead log. Every mutating call encodes its records into the batch being filled
 * and returns a promise that resolves once that batch is durable (batches become durable in
 * order, so awaiting the last promise covers all earlier calls). Calls made while a batch is in
 * flight go into the next one (group commit).
 */
export class Wal {
  /** What recovery found: tail position, what was cut, corruption, groups needing repair. */
  readonly recovery!: WalRecoveryReport;

  /** Opens (creating if needed) the log in `options.dir` and recovers it. */
  static async open(_options: WalOptions): Promise<Wal> {
    throw new NotSupported('wal: not built yet');
  }

  /**
   * Appends entries of one group; indexes must be consecutive. An entry at an index already
   * held replaces it and everything after it (Raft's conflicting suffix). Resolves when durable.
   */
  append(_groupId: number, _entries: readonly WalEntry[]): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /** Persists a group's hard state; resolves when durable. */
  saveHardState(_groupId: number, _state: WalHardState): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /** Removes a group's entries at `fromIndex` and above; resolves when durable. */
  truncateSuffix(_groupId: number, _fromIndex: number): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /**
   * Entries at or below `index` are no longer needed by the group (its state machine is
   * durable past them). Segments are recycled once every group's checkpoint has passed them.
   */
  checkpoint(_groupId: number, _index: number): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /**
   * The group's state now comes from a snapshot at (index, term): entries at or below it are
   * dropped (all entries, if the log does not hold that index with that term), and a
   * needs-repair flag is cleared. Resolves when durable.
   */
  installSnapshot(_groupId: number, _meta: WalSnapshotMeta): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /** Resolves when everything called so far is durable. */
  sync(): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }

  /**
   * Entries [lo, hi) of a group, at most `maxBytes` of payload but at least one entry. Recent
   * payloads come from a bounded cache, older ones are read back from the segments.
   * Throws InvalidArgument when lo < firstIndex or hi > lastIndex + 1.
   */
  entries(_groupId: number, _lo: number, _hi: number, _maxBytes = Infinity): Promise<WalEntry[]> {
    throw new NotSupported('wal: not built yet');
  }

  /** Term of the entry at `index` (firstIndex - 1 .. lastIndex), else undefined. */
  term(_groupId: number, _index: number): number | undefined {
    throw new NotSupported('wal: not built yet');
  }

  /** First index held (snapshot/checkpoint index + 1); 1 for a new group. */
  firstIndex(_groupId: number): number {
    throw new NotSupported('wal: not built yet');
  }

  /** Last index held; firstIndex - 1 when the group holds no entries. */
  lastIndex(_groupId: number): number {
    throw new NotSupported('wal: not built yet');
  }

  /** Last saved hard state; zeros for a new group. */
  hardState(_groupId: number): WalHardState {
    throw new NotSupported('wal: not built yet');
  }

  /** Last installed snapshot's metadata; {0, 0} if none. */
  snapshotMeta(_groupId: number): WalSnapshotMeta {
    throw new NotSupported('wal: not built yet');
  }

  /** True when recovery found this group's records damaged; cleared by installSnapshot. */
  needsRepair(_groupId: number): boolean {
    throw new NotSupported('wal: not built yet');
  }

  /** Every group that has state in the log. */
  groupIds(): number[] {
    throw new NotSupported('wal: not built yet');
  }

  /** Waits for in-flight batches, then closes the segment files. The BlockIo stays open. */
  close(): Promise<void> {
    throw new NotSupported('wal: not built yet');
  }
}
