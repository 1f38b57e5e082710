import { RaftblockError } from '../common/errors.js';

/** The entries asked for are at or below the group's compaction point (checkpoint/snapshot). */
export class WalCompacted extends RaftblockError {
  constructor(readonly groupId: number, readonly index: number) {
    super('WAL_COMPACTED', `group ${groupId}: index ${index} is compacted`);
  }
}

/** The entries asked for are beyond the group's last index. */
export class WalIndexUnavailable extends RaftblockError {
  constructor(readonly groupId: number, readonly index: number) {
    super('WAL_INDEX_UNAVAILABLE', `group ${groupId}: index ${index} is beyond the log`);
  }
}

/** A write to the log failed; the log accepts nothing more (restart to recover). */
export class WalFailed extends RaftblockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('WAL_FAILED', message, options);
  }
}
