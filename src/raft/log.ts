/**
 * The replicated log as the core sees it: what the host's Storage holds (durable) followed by
 * the `unstable` tail (appended here, handed out in a Ready, not yet acknowledged durable),
 * plus the commit and apply positions.
 */
import { assert } from '../common/assert.js';
import { type Entry, type Snapshot, type Storage, LogCompacted, LogUnavailable, entrySizeBytes } from './types.js';

export class RaftLog {
  readonly storage: Storage;
  /** A snapshot received from the leader, not yet durable. */
  unstableSnapshot: Snapshot | undefined;
  /** unstable[i].index === unstableOffset + i. */
  unstable: Entry[] = [];
  unstableOffset: number;
  /**
   * Highest unstable index already handed to the host to persist (in a Ready not yet
   * advanced). Entries after it go out in the next Ready; a tail replaced below it is handed
   * out again (the host's log lets a later write replace an earlier one's tail).
   */
  handedOutTo: number;
  committed: number;
  /** Highest index the host acknowledged applying. */
  applied: number;

  constructor(storage: Storage, applied: number) {
    this.storage = storage;
    this.unstableOffset = storage.lastIndex() + 1;
    this.handedOutTo = storage.lastIndex();
    this.committed = storage.firstIndex() - 1;
    this.applied = Math.max(applied, storage.firstIndex() - 1);
  }

  firstIndex(): number {
    if (this.unstableSnapshot) return this.unstableSnapshot.metadata.index + 1;
    return this.storage.firstIndex();
  }

  lastIndex(): number {
    if (this.unstable.length > 0) return this.unstableOffset + this.unstable.length - 1;
    if (this.unstableSnapshot) return this.unstableSnapshot.metadata.index;
    return this.storage.lastIndex();
  }

  /** Last index that is durable and belongs to this log (not overwritten by the unstable tail). */
  stableLastIndex(): number {
    if (this.unstableSnapshot) return 0;
    if (this.unstable.length > 0) return this.unstableOffset - 1;
    return this.storage.lastIndex();
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    assert(t !== undefined, 'last term unknown');
    return t;
  }

  /** Term at index, or undefined when compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index > this.lastIndex()) return undefined;
    if (this.unstable.length > 0 && index >= this.unstableOffset) return this.unstable[index - this.unstableOffset].term;
    if (this.unstableSnapshot) {
      if (index === this.unstableSnapshot.metadata.index) return this.unstableSnapshot.metadata.term;
      if (index < this.unstableSnapshot.metadata.index) return undefined;
    }
    const dummy = this.storage.firstIndex() - 1;
    if (index < dummy) return undefined;
    try {
      return this.storage.term(index);
    } catch (e) {
      if (e instanceof LogCompacted || e instanceof LogUnavailable) return undefined;
      throw e;
    }
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Raft §5.4.1: a log at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Appends entries after (index, logTerm) if that entry matches. Returns the index of the last
   * new entry and the first index actually (re)written (Infinity when every entry was already
   * held), or undefined on mismatch. Never truncates committed entries (asserted).
   */
  maybeAppend(index: number, logTerm: number, ents: Entry[]): { lastNew: number; writtenFrom: number } | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    let writtenFrom = Number.POSITIVE_INFINITY;
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i];
      assert(e.index === index + 1 + i, `non-contiguous entries in append at ${e.index}`);
      if (!this.matchTerm(e.index, e.term)) {
        assert(e.index > this.committed, `conflict at committed index ${e.index} (committed ${this.committed})`);
        this.append(ents.slice(i));
        writtenFrom = e.index;
        break;
      }
    }
    return { lastNew, writtenFrom };
  }

  /** Appends to the unstable tail; an entry at an index already held replaces it and what follows. */
  append(ents: Entry[]): void {
    if (ents.length === 0) return;
    const after = ents[0].index;
    assert(after > this.committed, `append would truncate committed index ${this.committed} at ${after}`);
    assert(after <= this.lastIndex() + 1, `append leaves a gap at ${after} after ${this.lastIndex()}`);
    if (after === this.unstableOffset + this.unstable.length) {
      for (const e of ents) this.unstable.push(e);
    } else if (after <= this.unstableOffset) {
      // Replaces the whole unstable tail (and stable entries from `after`, on the next persist).
      this.unstableOffset = after;
      this.unstable = [...ents];
    } else {
      this.unstable.length = after - this.unstableOffset;
      for (const e of ents) this.unstable.push(e);
    }
    if (this.handedOutTo >= after) this.handedOutTo = after - 1;
  }

  /** Unstable entries not yet handed to the host (the next Ready's `entries`). */
  entriesToPersist(): Entry[] {
    return this.unstable.slice(Math.max(0, this.handedOutTo + 1 - this.unstableOffset));
  }

  hasEntriesToPersist(): boolean {
    return this.unstableOffset + this.unstable.length - 1 > this.handedOutTo;
  }

  /** The host has been handed everything up to the last index. */
  handOutAll(): void {
    this.handedOutTo = this.lastIndex();
  }

  /** Entries [lo, hi) with at most maxBytes (at least one entry). Undefined if lo is compacted. */
  slice(lo: number, hi: number, maxBytes: number, maxCount = Number.MAX_SAFE_INTEGER): Entry[] | undefined {
    if (lo >= hi) return [];
    if (lo < this.firstIndex()) return undefined;
    assert(hi <= this.lastIndex() + 1, `slice beyond last index: ${hi}`);
    const out: Entry[] = [];
    let bytes = 0;
    if (lo < this.unstableOffset) {
      const stableHi = Math.min(hi, this.unstableOffset);
      let got: Entry[];
      try {
        got = this.storage.entries(lo, stableHi, maxBytes);
      } catch (e) {
        if (e instanceof LogCompacted) return undefined;
        throw e;
      }
      for (const e of got) {
        if (out.length >= maxCount) return out;
        bytes += entrySizeBytes(e);
        if (out.length > 0 && bytes > maxBytes) return out;
        out.push(e);
      }
      if (out.length < stableHi - lo) return out;
    }
    const ulo = Math.max(lo, this.unstableOffset);
    for (let i = ulo; i < hi; i++) {
      if (out.length >= maxCount) break;
      const e = this.unstable[i - this.unstableOffset];
      bytes += entrySizeBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Highest index <= index whose term is <= term (fast backtracking with a conflict term). */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    for (; i > 0; i--) {
      const t = this.term(i);
      if (t === undefined || t <= term) break;
    }
    return i;
  }

  /** Committed entries that are durable here and not yet handed to the host. */
  nextCommittedEntries(from: number, maxBytes: number): Entry[] {
    const hi = Math.min(this.committed, this.stableLastIndex());
    if (from > hi) return [];
    return this.slice(from, hi + 1, maxBytes) ?? [];
  }

  /** The host made entries up to (index, term) durable. */
  stableTo(index: number, term: number): void {
    if (this.unstable.length === 0 || index < this.unstableOffset) return;
    const last = this.unstableOffset + this.unstable.length - 1;
    if (index > last) return;
    if (this.unstable[index - this.unstableOffset].term !== term) return;
    this.unstable = this.unstable.slice(index + 1 - this.unstableOffset);
    this.unstableOffset = index + 1;
  }

  stableSnapTo(index: number): void {
    if (this.unstableSnapshot && this.unstableSnapshot.metadata.index === index) this.unstableSnapshot = undefined;
  }

  /** Replaces the log with a snapshot from the leader. */
  restore(snap: Snapshot): void {
    assert(snap.metadata.index > this.committed, 'restoring a snapshot that does not advance commit');
    this.unstableSnapshot = snap;
    this.unstable = [];
    this.unstableOffset = snap.metadata.index + 1;
    this.handedOutTo = snap.metadata.index;
    this.committed = snap.metadata.index;
  }
}
