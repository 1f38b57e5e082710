/**
 * The send-time half of the store command gate. A PG leader proposes a command of a level
 * only once every replica's node told at least that level (StoreOpsLevels.requireForRequest), but
 * it judges by the level each node last told, and a node restarted on an earlier build (a
 * rollback mid-upgrade) is judged by its previous life's until its first frame arrives. A
 * command proposed in that window, or already in the log, would then reach it and stop it at
 * every restart. So every append is cut, as it leaves on a connection, before its first entry
 * the far node's build cannot apply, as that connection's first frame told: the replica stays
 * behind there (Raft sends from there again) until its node is upgraded, and the others commit
 * without it. Nothing is cut for a node of this build's level, the common case, so a write
 * pays one comparison.
 */
import type { Message, MsgApp } from '../raft/types.js';
import { EntryType } from '../raft/types.js';
import { storeOpsLevel, storeOpsLevelOfCommand } from '../store/ops.js';

/**
 * `msg` as it may leave for a replica whose node applies store commands up to `peerLevel`:
 * itself, or (an append holding a command beyond that level) a copy whose entries end before
 * the first such command. Only PG groups' messages come here: group 0's entries are map
 * commands, not store commands.
 */
export function cutToStoreOpsLevel(msg: Message, peerLevel: number): Message {
  if (peerLevel >= storeOpsLevel || msg.type !== 'app') return msg;
  const entries = msg.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.type === EntryType.Normal && storeOpsLevelOfCommand(e.data) > peerLevel) {
      // A shorter append is still a valid one: the follower acknowledges what it took and
      // commits no further than its last entry (Raft's min(commit, last new index)).
      const cut: MsgApp = { ...msg, entries: entries.slice(0, i) };
      return cut;
    }
  }
  return msg;
}

/**
 * How many log entries the gate has held back, each counted once per replica (by peer node,
 * group and index) however often the appends holding it are cut: Raft resends from the same
 * index at every heartbeat round while a replica stays behind, and a count of cuts would grow
 * with time rather than with what is held back. One number is kept per (peer, group) pair
 * held back (pairs only ever cut mid rolling upgrade), and the pairs of a node or a group the
 * map no longer has are dropped (keepOnly), so what is kept stays bounded by the cluster's size.
 */
export class HeldBackTally {
  /** Peer node id → group id → the highest index counted. */
  private readonly countedThrough = new Map<number, Map<number, number>>();

  /** The entries of `msg` past `gated`'s end (what the gate cut) not counted before. */
  count(group: number, msg: MsgApp, gated: MsgApp): number {
    let byGroup = this.countedThrough.get(msg.to);
    if (byGroup === undefined) this.countedThrough.set(msg.to, (byGroup = new Map()));
    const through = byGroup.get(group) ?? 0;
    let fresh = 0;
    let last = through;
    for (let i = gated.entries.length; i < msg.entries.length; i++) {
      const index = msg.entries[i].index;
      if (index > through) fresh++;
      if (index > last) last = index;
    }
    if (last > through) byGroup.set(group, last);
    return fresh;
  }

  /** Drops the pairs of peers and groups that `keep` does not keep (a node removed, a pool deleted). */
  keepOnly(keep: { peer(id: number): boolean; group(id: number): boolean }): void {
    for (const [peer, byGroup] of this.countedThrough) {
      if (!keep.peer(peer)) {
        this.countedThrough.delete(peer);
        continue;
      }
      for (const group of byGroup.keys()) if (!keep.group(group)) byGroup.delete(group);
      if (byGroup.size === 0) this.countedThrough.delete(peer);
    }
  }

  /** How many (peer, group) pairs are kept. */
  get pairs(): number {
    let n = 0;
    for (const byGroup of this.countedThrough.values()) n += byGroup.size;
    return n;
  }
}
