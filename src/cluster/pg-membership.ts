/**
 * A PG replica's Raft membership as of its store's durable index, kept beside the store
 * (`membership.json` in the PG directory), so that a node restarted after its PG's
 * configuration changed (a rebalancing move) resumes with that configuration rather than the
 * map's replica set.
 *
 * Why it is needed: a PG's Raft log is checkpointed away once its store is durable, and with
 * it the membership changes it held; the host rebuilds the log from the store's durable index
 * (a snapshot at that index) plus what the WAL still holds, so the snapshot must carry the
 * membership at that index. The host saves it (saveConfState) after the store's checkpoint and
 * BEFORE it lets the WAL drop the entries, and after a snapshot install before the WAL is
 * reset; so a crash in between leaves the changes after the saved index in the WAL, and
 * `membershipAt(durableIndex)` replays them from there. A save that would not change the
 * configuration is skipped (checkpoints are frequent, moves are rare): the file then holds the
 * configuration at the WAL's compaction point, which is all a replay needs.
 *
 * The file: `{ "index": N, "confState": {...}, "pending"?: { "index": S, "confState": {...} } }`
 * (`pending`: a snapshot being installed, whose membership must survive a crash in the middle). `index` 1 is a new group's bootstrap
 * membership (Raft's initial snapshot at index 1); `index` 0 with no voters is a replica that
 * joins an existing group (it learns the membership from the snapshot it receives).
 */
import { join } from 'node:path';
import { applyConfChange, isJoint } from '../raft/confchange.js';
import { cloneConfState, decodeConfChange, emptyConfState, EntryType, type ConfState } from '../raft/index.js';
import type { Wal } from '../wal/index.js';
import { readFileIfExists, writeFileDurably } from '../common/durable-file.js';
import { Corruption } from '../common/errors.js';

export const membershipFileName = 'membership.json';

export interface SavedMembership {
  index: number;
  confState: ConfState;
  /**
   * A snapshot being installed: its index and membership, saved before the store starts to
   * take its image (see the host's prepareSnapshot). Once the install is recorded, the next
   * save replaces the whole file.
   */
  pending?: { index: number; confState: ConfState };
}

export async function loadMembership(pgDir: string): Promise<SavedMembership | undefined> {
  const bytes = await readFileIfExists(join(pgDir, membershipFileName));
  if (bytes === undefined) return undefined;
  const text = bytes.toString('utf8');
  const v = JSON.parse(text) as SavedMembership;
  if (!Number.isSafeInteger(v.index) || v.index < 0 || !v.confState || !Array.isArray(v.confState.voters)) {
    throw new Corruption(`bad ${membershipFileName} in ${pgDir}`);
  }
  const cs = { ...emptyConfState(), ...v.confState };
  const out: SavedMembership = { index: v.index, confState: cloneConfState(cs) };
  if (v.pending && Number.isSafeInteger(v.pending.index) && v.pending.confState && Array.isArray(v.pending.confState.voters)) {
    out.pending = { index: v.pending.index, confState: cloneConfState({ ...emptyConfState(), ...v.pending.confState }) };
  }
  return out;
}

export async function saveMembership(pgDir: string, m: SavedMembership): Promise<void> {
  await writeFileDurably(join(pgDir, membershipFileName), JSON.stringify({ index: m.index, confState: m.confState, ...(m.pending ? { pending: m.pending } : {}) }));
}

/** The bootstrap membership of a new group (Raft's snapshot at index 1). */
export function bootstrapMembership(voters: readonly number[]): SavedMembership {
  const cs = emptyConfState();
  cs.voters = [...voters].sort((a, b) => a - b);
  return { index: 1, confState: cs };
}

/** A replica joining an existing group: no membership until its first snapshot. */
export function joinerMembership(): SavedMembership {
  return { index: 0, confState: emptyConfState() };
}

/**
 * The membership at `durableIndex`: the saved one, advanced over the configuration changes the
 * WAL holds after it. Undefined when the WAL no longer holds them: the caller then does not
 * start the replica (a guessed configuration, with later changes applied to it, could make a
 * replica believe it is a quorum on its own).
 */
export async function membershipAt(saved: SavedMembership, wal: Wal, groupId: number, durableIndex: number): Promise<ConfState | undefined> {
  if (saved.index >= durableIndex) return cloneConfState(saved.confState);
  let cs = cloneConfState(saved.confState);
  // The saved configuration is the one at the WAL's compaction point too: a save that would
  // not change it is skipped, and the WAL drops nothing before the save (see the host).
  const lo = Math.max(saved.index + 1, wal.firstIndex(groupId));
  if (lo > durableIndex) return cs;
  try {
    const ents = await wal.entries(groupId, lo, durableIndex + 1);
    for (const e of ents) {
      if (e.type !== EntryType.ConfChange) continue;
      const cc = decodeConfChange(e.data);
      // As the core does: a change that does not fit the configuration is a no-op.
      const fits = cc.changes.length === 0 ? isJoint(cs) : !isJoint(cs);
      if (fits) cs = applyConfChange(cs, cc);
    }
    return cs;
  } catch {
    return undefined;
  }
}
