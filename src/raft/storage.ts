/**
 * An in-memory `Storage`: the simulator's disk, and a model for hosts that keep a cache of
 * their WAL. The host calls `append`, `setHardState`, `applySnapshot` while handling a Ready,
 * and `createSnapshot` / `compact` when it takes a snapshot of its state machine.
 */
import { assert } from '../common/assert.js';
import {
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  type Storage,
  LogCompacted,
  LogUnavailable,
  entrySizeBytes,
} from './types.js';

export function emptyConfState(): ConfState {
  return { voters: [], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false };
}

export function cloneConfState(cs: ConfState): ConfState {
  return {
    voters: [...cs.voters],
    votersOutgoing: [...cs.votersOutgoing],
    learners: [...cs.learners],
    learnersNext: [...cs.learnersNext],
    autoLeave: cs.autoLeave,
  };
}

export class MemoryStorage implements Storage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  /** ents[0] is a dummy entry at the snapshot's index and term. */
  private ents: Entry[];
  private snap: Snapshot;

  /**
   * An empty storage (a node that will join an existing group: it receives a snapshot first),
   * or, with initialVoters, a new group's bootstrap: a snapshot at index 1, term 1 carrying the
   * initial membership. Every member of a new group must bootstrap identically, and a node
   * added later must not, so that membership is never inferred from an empty log.
   */
  constructor(initialVoters: number[] = []) {
    const cs = emptyConfState();
    cs.voters = [...initialVoters].sort((a, b) => a - b);
    const bootstrap = initialVoters.length > 0 ? 1 : 0;
    this.snap = { metadata: { index: bootstrap, term: bootstrap, confState: cs }, data: new Uint8Array(0) };
    this.ents = [{ term: bootstrap, index: bootstrap, type: 0, data: new Uint8Array(0) }];
    this.hardState = { term: bootstrap, vote: 0, commit: bootstrap };
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: cloneConfState(this.snap.metadata.confState) };
  }

  /** Membership recorded with the snapshot; a host tracks later changes itself. */
  setConfState(cs: ConfState): void {
    this.snap.metadata.confState = cloneConfState(cs);
  }

  firstIndex(): number {
    return this.ents[0].index + 1;
  }

  lastIndex(): number {
    return this.ents[0].index + this.ents.length - 1;
  }

  term(index: number): number {
    const offset = this.ents[0].index;
    if (index < offset) throw new LogCompacted(index);
    if (index - offset >= this.ents.length) throw new LogUnavailable(index);
    return this.ents[index - offset].term;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0].index;
    if (lo <= offset) throw new LogCompacted(lo);
    if (hi > this.lastIndex() + 1) throw new LogUnavailable(hi);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.ents[i - offset];
      bytes += entrySizeBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  /** Appends entries; an entry at an index already held replaces it and all that follows. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const offset = this.ents[0].index;
    let es = entries;
    // Entries below the snapshot are already covered by it.
    if (es[es.length - 1].index < first) return;
    if (es[0].index < first) es = es.slice(first - es[0].index);
    const at = es[0].index - offset;
    assert(at <= this.ents.length, `storage append leaves a gap: at ${es[0].index}, last ${this.lastIndex()}`);
    this.ents.length = at;
    for (const e of es) this.ents.push(e);
  }

  /** Replaces everything with a snapshot received from the leader. */
  applySnapshot(snap: Snapshot): void {
    assert(snap.metadata.index >= this.snap.metadata.index, 'snapshot older than the one held');
    this.snap = { metadata: { ...snap.metadata, confState: cloneConfState(snap.metadata.confState) }, data: snap.data };
    this.ents = [{ term: snap.metadata.term, index: snap.metadata.index, type: 0, data: new Uint8Array(0) }];
  }

  /** Records a snapshot of the host's state machine at `index` (<= applied). */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Snapshot {
    assert(index > this.snap.metadata.index, 'snapshot index not beyond the previous snapshot');
    assert(index <= this.lastIndex(), 'snapshot index beyond the last entry');
    const term = this.term(index);
    this.snap = { metadata: { index, term, confState: cloneConfState(confState) }, data };
    return this.snap;
  }

  /** Discards entries up to and including `index`, which a snapshot must cover. */
  compact(index: number): void {
    const offset = this.ents[0].index;
    if (index <= offset) return;
    assert(index <= this.lastIndex(), 'compact beyond the last entry');
    assert(index <= this.snap.metadata.index, 'compact beyond the snapshot');
    const i = index - offset;
    const dummy: Entry = { term: this.ents[i].term, index, type: 0, data: new Uint8Array(0) };
    this.ents = [dummy, ...this.ents.slice(i + 1)];
  }
}
