import type { BlockIo } from '../io/types.js';
import type { Logger } from '../common/log.js';

/** One Raft log entry as the WAL stores it (structurally a raft `Entry`). */
export interface WalEntry {
  index: number;
  term: number;
  /** The Raft entry type (normal, conf change...), opaque to the WAL; 0..255. */
  type: number;
  data: Uint8Array;
}

/** What Raft must persist before answering: term, vote (0 = none), commit. */
export interface WalHardState {
  term: number;
  vote: number;
  commit: number;
}

/** Snapshot metadata kept per group: the log starts right after `index`. */
export interface WalSnapshotMeta {
  index: number;
  term: number;
}

export interface WalOptions {
  /** Directory holding the segment files (created if missing). */
  dir: string;
  /** The I/O backend (see src/io/select.ts). */
  io: BlockIo;
  /** Size of every segment file; a multiple of 4 KiB. Default 64 MiB. */
  segmentBytes?: number;
  /** Largest batch (one RWF_DSYNC write); a multiple of 4 KiB. Default 1 MiB. */
  maxBatchBytes?: number;
  /** Largest entry payload. Default maxBatchBytes minus headers. */
  maxRecordBytes?: number;
  /** Batches written concurrently (1 = strict group commit). Default 1, at most 8. */
  maxBatchesInFlight?: number;
  /** Bytes of entry payloads kept in memory for reads (most recent first). Default 64 MiB. */
  cacheBytes?: number;
  /**
   * Segments no group needs any more that are kept for reuse (beside the prepared spare);
   * older ones are removed, so a burst's segments do not hold disk space for good. Default 2.
   */
  idleSegmentsKept?: number;
  logger?: Logger;
}

/** Where a record or batch sits. */
export interface WalPosition {
  segmentSeq: number;
  offsetBytes: number;
}

/** What `Wal.open` found and did. */
export interface WalRecoveryReport {
  segments: number;
  batches: number;
  records: number;
  /** Where appends continue. */
  tail: WalPosition;
  /**
   * A torn or unacknowledged tail that was cut: the first bad batch, why, how many bytes
   * were discarded (zeroed) and how many whole batches after it were dropped (in-flight
   * batches that were never acknowledged). Null after a clean shutdown.
   */
  cut: (WalPosition & { reason: string; bytes: number; batchesDropped: number }) | null;
  /**
   * A bad batch in the middle of the log, followed by valid batches that prove it had been
   * acknowledged. Nothing is truncated: the bad batch is skipped, and the groups it may have
   * held are reported in `needsRepair`.
   */
  corruption: (WalPosition & { reason: string }) | null;
  /** Groups whose log may have lost acknowledged records (must be repaired from a peer). */
  needsRepair: number[];
}
