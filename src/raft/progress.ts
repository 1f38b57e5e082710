/**
 * The leader's view of each member: how far its log matches, what is in flight, and when it
 * last acknowledged us (for check-quorum, ReadIndex and the lease).
 */
import { assert } from '../common/assert.js';
import type { NodeId, ProgressState } from './types.js';

/** A bounded ring of in-flight MsgApp (last index, bytes), freed as acknowledgements arrive. */
export class Inflights {
  private readonly indexes: number[] = [];
  private readonly sizes: number[] = [];
  bytes = 0;
  constructor(
    readonly maxCount: number,
    readonly maxBytes: number,
  ) {
    assert(maxCount > 0, 'maxInflightMsgs must be positive');
  }
  get count(): number {
    return this.indexes.length;
  }
  full(): boolean {
    return this.indexes.length >= this.maxCount || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }
  add(lastIndex: number, bytes: number): void {
    assert(!this.full(), 'inflights overflow');
    assert(this.indexes.length === 0 || lastIndex > this.indexes[this.indexes.length - 1], 'inflight indexes not increasing');
    this.indexes.push(lastIndex);
    this.sizes.push(bytes);
    this.bytes += bytes;
  }
  /** Frees every message whose last index <= index. */
  freeLE(index: number): void {
    let n = 0;
    while (n < this.indexes.length && this.indexes[n] <= index) {
      this.bytes -= this.sizes[n];
      n++;
    }
    if (n > 0) {
      this.indexes.splice(0, n);
      this.sizes.splice(0, n);
    }
    assert(this.bytes >= 0, 'inflight bytes negative');
  }
  /** Frees the oldest message: it was probably lost, and a later send will reveal the gap. */
  freeFirstOne(): void {
    if (this.indexes.length === 0) return;
    this.bytes -= this.sizes[0];
    this.indexes.shift();
    this.sizes.shift();
  }
  reset(): void {
    this.indexes.length = 0;
    this.sizes.length = 0;
    this.bytes = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** Probe state: one MsgApp sent, wait for an answer (or a heartbeat answer) before the next. */
  probeSent = false;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  readonly inflights: Inflights;
  /** Snapshot state: the snapshot being sent and how far. */
  pendingSnapshot = 0;
  snapChunksSent = 0;
  snapChunksAcked = 0;
  snapTotalBytes = 0;
  /** Largest leader tick echoed back in this term (lease); -Infinity when none. */
  ackTick = Number.NEGATIVE_INFINITY;
  /** Largest leader seq echoed back in this term (ReadIndex rounds). */
  ackSeq = 0;
  /** The instance of the member's log its latest answer named (Config.logInstance); 0: none heard. */
  logInstance = 0;
  /**
   * Answers echoing a `seq` below this are dropped: they answer messages sent before this
   * progress began or forgot the member's log, and may come from an instance of that log
   * since lost (on another connection, delivered late).
   */
  answersFromSeq = 0;

  constructor(
    readonly id: NodeId,
    next: number,
    maxInflightMsgs: number,
    maxInflightBytes: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.snapChunksSent = 0;
    this.snapChunksAcked = 0;
    this.snapTotalBytes = 0;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      const pending = this.pendingSnapshot;
      this.resetState('probe');
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState('probe');
      this.next = this.match + 1;
    }
  }

  /**
   * The member's log is another instance than the one `match` came from: nothing it holds is
   * known. Probes from `next` (the leader's next index: the answer tells where the logs meet).
   */
  forgetLog(next: number): void {
    this.match = 0;
    this.resetState('probe');
    this.next = next;
  }

  becomeReplicate(): void {
    this.resetState('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(index: number, totalBytes: number): void {
    this.resetState('snapshot');
    this.pendingSnapshot = index;
    this.snapTotalBytes = totalBytes;
  }

  /** An acknowledgement up to index. Returns true if it advanced match. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the MsgApp at `rejected`, with the follower's hint of where to retry.
   * Returns false for a stale rejection.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /** Whether sending more MsgApp must wait. */
  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }
}

/** majorityValue's sorting space: it runs on every commit check, so it allocates nothing. */
const majorityScratch: number[] = [];

/** The value a majority of `ids` has reached: the (n/2+1)-th largest of value(id). */
export function majorityValue(ids: readonly NodeId[], value: (id: NodeId) => number): number {
  if (ids.length === 0) return Number.POSITIVE_INFINITY; // an empty half never constrains a joint quorum
  // Insertion sort, largest first: a configuration has a handful of voters.
  const vals = majorityScratch;
  vals.length = 0;
  for (const id of ids) {
    const x = value(id);
    let i = vals.length;
    vals.push(x);
    while (i > 0 && vals[i - 1] < x) {
      vals[i] = vals[i - 1];
      i--;
    }
    vals[i] = x;
  }
  return vals[Math.floor(ids.length / 2)];
}

export type VoteResult = 'won' | 'lost' | 'pending';

export function majorityVote(ids: readonly NodeId[], votes: Map<NodeId, boolean>): VoteResult {
  if (ids.length === 0) return 'won';
  let yes = 0;
  let missing = 0;
  for (const id of ids) {
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) yes++;
  }
  const q = Math.floor(ids.length / 2) + 1;
  if (yes >= q) return 'won';
  if (yes + missing >= q) return 'pending';
  return 'lost';
}

export function jointVote(incoming: readonly NodeId[], outgoing: readonly NodeId[], votes: Map<NodeId, boolean>): VoteResult {
  const a = majorityVote(incoming, votes);
  const b = majorityVote(outgoing, votes);
  if (a === 'lost' || b === 'lost') return 'lost';
  if (a === 'won' && b === 'won') return 'won';
  return 'pending';
}
