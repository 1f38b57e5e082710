/**
 * The consensus core: one Raft group member as a pure state machine a host drives.
 * (Implementation in progress; the public surface below is stable.)
 */
import type { Config, ConfChange, Message, NodeId, Ready, Status, Storage } from './types.js';

/** Where a proposal landed; the host matches applied entries by both fields. */
export interface ProposalRef {
  index: number;
  term: number;
}

export class RaftNode {
  readonly id: NodeId;
  constructor(config: Config, storage: Storage) {
    this.id = config.id;
    void storage;
  }
  /** Advances the logical clock by one tick (elections, heartbeats, lease expiry, check-quorum). */
  tick(): void { throw new Error('not implemented'); }
  /** Handles a message from a peer. Stale or malformed messages are dropped, never thrown. */
  step(msg: Message): void { void msg; throw new Error('not implemented'); }
  /** Appends data as a new entry (leader only). Throws NotLeader or Unavailable. */
  propose(data: Uint8Array): ProposalRef { void data; throw new Error('not implemented'); }
  /** Proposes a membership change (joint consensus). Throws NotLeader or Unavailable. */
  proposeConfChange(cc: ConfChange): ProposalRef { void cc; throw new Error('not implemented'); }
  /** Requests a linearizable read point; the answer arrives in Ready.readStates with ctx. */
  readIndex(ctx: string): void { void ctx; throw new Error('not implemented'); }
  /** True while this leader holds a lease: no other leader can exist right now. */
  leaseValid(): boolean { throw new Error('not implemented'); }
  /** Starts an election now (pre-vote first when enabled). */
  campaign(): void { throw new Error('not implemented'); }
  /** Leader only: hands leadership to `to` once it is caught up (MsgTimeoutNow). */
  transferLeader(to: NodeId): void { void to; throw new Error('not implemented'); }
  hasReady(): boolean { throw new Error('not implemented'); }
  ready(): Ready { throw new Error('not implemented'); }
  advance(rd: Ready): void { void rd; throw new Error('not implemented'); }
  status(): Status { throw new Error('not implemented'); }
}
