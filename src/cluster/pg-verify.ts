/**
 * Whether the replicas of a PG hold the same bytes (`raftblock pool verify`): each replica's
 * digest (node.ts groupDigest: a checksum of the PG's non-zero blocks, pg-digest.ts) is
 * comparable with another's only when both describe the same state, that is the same applied
 * index at the start and at the end of the read (an apply in between changes what was read).
 * A replica restoring a snapshot has no state to compare (pg-digest.ts): it is asked again,
 * like a busy PG. Pure: the client gathers the digests (admin-client.ts verifyPgs) and
 * retries a busy or restoring PG.
 */
import type { NodeId } from '../raft/index.js';

/** One replica's answer, or why it has none. */
export type ReplicaDigest =
  | { nodeId: NodeId; appliedIndex: number; appliedIndexAfter?: number; digest: string }
  /** It was restoring a snapshot, or began one while it was read: no state of it was read (pg-digest.ts). */
  | { nodeId: NodeId; restoring: true }
  | { nodeId: NodeId; error: string };

export type PgVerdict =
  /** Every replica answered at the same, unchanging applied index with the same digest. */
  | { result: 'consistent'; appliedIndex: number }
  /**
   * Replicas at the same, unchanging applied index disagree: `groups` lists the nodes by the
   * digest they hold, the largest group first (ties: the lowest node id first).
   */
  | { result: 'mismatch'; appliedIndex: number; groups: { digest: string; nodeIds: NodeId[] }[] }
  /** Writes were being applied (indexes differ or moved): nothing to conclude; ask again. */
  | { result: 'busy'; appliedIndexes: Record<NodeId, number> }
  /** These replicas were restoring a snapshot; those that did answer agree: ask again. */
  | { result: 'restoring'; nodeIds: NodeId[] }
  /** Some replica gave no digest; those that did agree (or are busy). */
  | { result: 'incomplete'; errors: Record<NodeId, string> };

export function judgeReplicas(answers: readonly ReplicaDigest[]): PgVerdict {
  const errors: Record<NodeId, string> = {};
  for (const a of answers) if ('error' in a) errors[a.nodeId] = a.error;
  // Digests of two versions (a node of an earlier build, mid-upgrade) never match: only the
  // newest version's are compared, the others are answers missing.
  const digests = answers.filter((a): a is Extract<ReplicaDigest, { digest: string }> => 'digest' in a);
  const newest = Math.max(0, ...digests.map((a) => digestVersion(a.digest)));
  const ok = digests.filter((a) => digestVersion(a.digest) === newest);
  for (const a of digests) if (digestVersion(a.digest) !== newest) errors[a.nodeId] = `its digest is of an earlier version (v${digestVersion(a.digest)}; upgrade the node)`;
  // Only answers that describe one settled state are compared.
  const settled = ok.filter((a) => a.appliedIndexAfter === undefined || a.appliedIndexAfter === a.appliedIndex);
  const index = settled[0]?.appliedIndex;
  const comparable = settled.length === ok.length && ok.every((a) => a.appliedIndex === index);
  if (comparable && ok.length >= 2) {
    const byDigest = new Map<string, NodeId[]>();
    for (const a of ok) byDigest.set(a.digest, [...(byDigest.get(a.digest) ?? []), a.nodeId]);
    if (byDigest.size > 1) {
      const groups = [...byDigest].map(([digest, nodeIds]) => ({ digest, nodeIds: [...nodeIds].sort((x, y) => x - y) }));
      groups.sort((x, y) => y.nodeIds.length - x.nodeIds.length || x.nodeIds[0] - y.nodeIds[0]);
      return { result: 'mismatch', appliedIndex: index as number, groups };
    }
  }
  if (Object.keys(errors).length > 0) return { result: 'incomplete', errors };
  // Its applied index will move when its restore ends: as a write under way, never a mismatch.
  const restoring = answers.filter((a) => 'restoring' in a).map((a) => a.nodeId);
  if (restoring.length > 0) return { result: 'restoring', nodeIds: restoring.sort((x, y) => x - y) };
  if (!comparable) {
    const appliedIndexes: Record<NodeId, number> = {};
    for (const a of ok) appliedIndexes[a.nodeId] = a.appliedIndexAfter ?? a.appliedIndex;
    return { result: 'busy', appliedIndexes };
  }
  return { result: 'consistent', appliedIndex: index ?? 0 };
}

/** The version a digest names (`vN:`), 1 for one that names none (the first version). */
function digestVersion(digest: string): number {
  const m = /^v(\d+):/.exec(digest);
  return m ? Number(m[1]) : 1;
}

/** Where a repair of one replica may take its copy from (see repairSources). */
export type RepairSources = { ok: true; sources?: NodeId[] } | { ok: false; reason: string };

/**
 * Judges a repair of `node`'s replica from a verdict on its PG (`raftblock pool repair`): a
 * rebuild copies the PG's leader, so after a mismatch it is safe only from a node holding the
 * copy a strict majority of the replicas hold, and only for a node that does not hold it
 * (rebuilding a majority replica from an odd leader would spread the odd copy). Without a
 * mismatch (consistent, busy, incomplete) nothing tells the copies apart: any leader will do.
 */
export function repairSources(verdict: PgVerdict, replicas: readonly NodeId[], node: NodeId): RepairSources {
  if (verdict.result !== 'mismatch') return { ok: true };
  const top = verdict.groups[0];
  const majority = top.nodeIds.length * 2 > replicas.length ? top.nodeIds : undefined;
  if (!majority) {
    return { ok: false, reason: `no copy of the PG is held by a majority of its replicas (${describeGroups(verdict.groups)}): which is right is the operator's call` };
  }
  if (majority.includes(node)) {
    const odd = verdict.groups.slice(1).flatMap((g) => g.nodeIds);
    return { ok: false, reason: `node ${node} holds the copy a majority holds (nodes ${majority.join(',')}); the odd one out is node ${odd.join(',')}` };
  }
  return { ok: true, sources: [...majority] };
}

/** Who holds which copy, for people: each digest's first 12 hex digits (its version tag left out). */
export function describeGroups(groups: readonly { digest: string; nodeIds: NodeId[] }[]): string {
  return groups.map((g) => (g.nodeIds.length > 1 ? `nodes ${g.nodeIds.join(',')} hold ` : `node ${g.nodeIds[0]} holds `) + g.digest.replace(/^v\d+:/, '').slice(0, 12)).join('; ');
}
