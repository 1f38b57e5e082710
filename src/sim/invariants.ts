/**
 * Safety invariants of the whole cluster, checked incrementally as the simulation runs:
 *  - election safety: at most one leader per term;
 *  - log matching: an (index, term) names one entry, and its predecessor's term is fixed;
 *  - leader completeness: a new leader holds every entry known committed;
 *  - state machine safety: no two nodes apply different entries at one index;
 *  - durability: an entry once committed is never replaced in any node's committed prefix,
 *    across crashes too;
 *  - commit monotonic: per node incarnation, and for the durable commit across crashes.
 */
import type { Entry, NodeId } from '../raft/types.js';

export class InvariantViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantViolation';
  }
}

interface Known {
  term: number;
  data: Uint8Array;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class Invariants {
  private readonly leaders = new Map<number, NodeId>();
  /** (index, term) → entry data and predecessor term. */
  private readonly entries = new Map<string, { data: Uint8Array; prevTerm: number }>();
  private readonly committed = new Map<number, Known>();
  private readonly applied = new Map<number, Known>();
  maxCommitted = 0;
  private readonly commitSeen = new Map<NodeId, number>();
  private readonly durableCommitSeen = new Map<NodeId, number>();

  fail(msg: string): never {
    throw new InvariantViolation(msg);
  }

  leaderSeen(id: NodeId, term: number): boolean {
    const prev = this.leaders.get(term);
    if (prev === undefined) {
      this.leaders.set(term, id);
      return true;
    }
    if (prev !== id) this.fail(`election safety: nodes ${prev} and ${id} are both leaders of term ${term}`);
    return false;
  }

  /** A node made `e` durable, with `prevTerm` at e.index - 1 in its log. */
  persisted(id: NodeId, e: Entry, prevTerm: number | undefined): void {
    const k = `${e.index}:${e.term}`;
    const known = this.entries.get(k);
    if (!known) {
      this.entries.set(k, { data: e.data, prevTerm: prevTerm ?? -1 });
      return;
    }
    if (!sameBytes(known.data, e.data)) this.fail(`log matching: node ${id} holds a different entry at index ${e.index} term ${e.term}`);
    if (prevTerm !== undefined && known.prevTerm >= 0 && known.prevTerm !== prevTerm) {
      this.fail(`log matching: node ${id} has term ${prevTerm} before (${e.index}, ${e.term}); others have ${known.prevTerm}`);
    }
  }

  /** A node's in-memory commit index is now `commit`; `termAt` reads its log. */
  commitAdvanced(id: NodeId, commit: number, termAt: (i: number) => number | undefined, dataAt: (i: number) => Uint8Array | undefined): void {
    const prev = this.commitSeen.get(id) ?? 0;
    if (commit < prev) this.fail(`commit monotonic: node ${id} commit went ${prev} -> ${commit}`);
    for (let i = prev + 1; i <= commit; i++) {
      const t = termAt(i);
      if (t === undefined) continue; // compacted into a snapshot
      const known = this.committed.get(i);
      if (known === undefined) {
        const data = dataAt(i);
        if (data) this.committed.set(i, { term: t, data });
      } else if (known.term !== t) {
        this.fail(`durability: node ${id} committed term ${t} at index ${i}, but term ${known.term} was committed there`);
      }
    }
    this.commitSeen.set(id, commit);
    if (commit > this.maxCommitted) this.maxCommitted = commit;
  }

  /** A node's log was dropped on purpose (a retired replica): its commit starts over from 0. */
  logDropped(id: NodeId): void {
    this.commitSeen.set(id, 0);
    this.durableCommitSeen.set(id, 0);
  }

  /** A node restarted: its in-memory commit restarts from the durable one. */
  restarted(id: NodeId, durableCommit: number): void {
    const prev = this.durableCommitSeen.get(id) ?? 0;
    if (durableCommit < prev) this.fail(`commit monotonic: node ${id} durable commit went ${prev} -> ${durableCommit}`);
    this.durableCommitSeen.set(id, durableCommit);
    this.commitSeen.set(id, durableCommit);
  }

  durableCommit(id: NodeId, commit: number): void {
    const prev = this.durableCommitSeen.get(id) ?? 0;
    if (commit < prev) this.fail(`commit monotonic: node ${id} durable commit went ${prev} -> ${commit}`);
    this.durableCommitSeen.set(id, commit);
  }

  appliedEntry(id: NodeId, e: Entry): void {
    const known = this.applied.get(e.index);
    if (known === undefined) {
      this.applied.set(e.index, { term: e.term, data: e.data });
      return;
    }
    if (known.term !== e.term || !sameBytes(known.data, e.data)) {
      this.fail(`state machine safety: node ${id} applied term ${e.term} at index ${e.index}, another node applied term ${known.term}`);
    }
  }

  /** A node became leader of `term`: it must hold every committed entry. */
  leaderComplete(id: NodeId, term: number, firstIndex: number, termAt: (i: number) => number | undefined): void {
    for (const [i, known] of this.committed) {
      if (i < firstIndex || known.term >= term) continue;
      const t = termAt(i);
      if (t !== known.term) this.fail(`leader completeness: leader ${id} of term ${term} has term ${t} at committed index ${i} (term ${known.term})`);
    }
  }
}
