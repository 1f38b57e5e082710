/**
 * The node's write-ahead log, shared by every Raft group (PG) on the node.
 *
 *   const wal = await Wal.open({ dir, io: await openBlockIo({ probeDir: dir }) });
 *   // One Ready handling for many groups: everything called in the same synchronous run goes
 *   // into one batch, so one device flush makes all of it durable (group commit).
 *   const p1 = wal.append(7, entries);
 *   const p2 = wal.saveHardState(7, { term, vote, commit });
 *   const p3 = wal.append(9, otherEntries);
 *   await Promise.all([p1, p2, p3]);   // or: await wal.sync()
 *
 * Layout on disk: fixed-size segment files `NNNNNNNNNNNNNNNN.wal` (sequence number, hex),
 * preallocated by writing zeros and recycled. A segment starts with a 4 KiB header (magic,
 * sequence, a random salt, sizes); then 4 KiB-aligned batches, each one RWF_DSYNC write: a
 * batch header (salt, segment, batch sequence, length, CRC32C) followed by records. A record is
 * (length, CRC32C, type, group id, term, index, payload). The first batch of every segment
 * repeats every group's hard state, snapshot and checkpoint so older segments can be recycled.
 *
 * Recovery tells a torn tail from corruption by sequence numbers: with at most W batches in
 * flight (maxBatchesInFlight, and a batch's promise resolves only once all before it are
 * written), batch N + W is written only after batch N completed. So a bad batch followed by a
 * valid one at least W later was acknowledged: corruption, reported (needsRepair per group),
 * never truncated. Anything less is an unacknowledged tail, cut and zeroed.
 *
 * See ./wal.ts for the class, ./format.ts for the byte layout, ./recovery.ts for open-time
 * scanning.
 */
export { Wal, type WalStats } from './wal.js';
export { WalCompacted, WalFailed, WalIndexUnavailable } from './errors.js';
export type { WalEntry, WalHardState, WalOptions, WalPosition, WalRecoveryReport, WalSnapshotMeta } from './types.js';
