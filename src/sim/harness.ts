/**
 * A synchronous, fully controlled network of Raft nodes for scripted scenarios (unit tests):
 * Ready batches are persisted at once (or held back, to test asynchronous persistence),
 * messages are delivered in order until the network is quiet, and any link can be cut or any
 * message filtered. Every delivered message can be traced as one line of text.
 */
import { RaftNode } from '../raft/node.js';
import { SeededRng } from '../raft/rng.js';
import { MemoryStorage } from '../raft/storage.js';
import { type Config, type Entry, type Message, type NodeId, type ReadState, type Ready, defaultConfig } from '../raft/types.js';

export interface HarnessNode {
  id: NodeId;
  raft: RaftNode;
  storage: MemoryStorage;
  applied: Entry[];
  readStates: ReadState[];
  /** When true, Ready batches are taken but not persisted until `persist(id)`. */
  holdPersist: boolean;
  held: Ready | undefined;
}

export class Harness {
  readonly nodes = new Map<NodeId, HarnessNode>();
  /** Messages waiting for delivery, in send order. */
  queue: Message[] = [];
  readonly trace: string[] = [];
  private readonly cut = new Set<string>();
  /** Return false to drop a message. */
  filter: ((m: Message) => boolean) | undefined;
  private readonly rng: SeededRng;

  constructor(
    voters: NodeId[],
    readonly overrides: Partial<Config> = {},
    seed = 1,
  ) {
    this.rng = new SeededRng(seed);
    for (const id of voters) this.add(id, new MemoryStorage(voters));
  }

  /** Adds a node with the given storage (empty storage: a node that will join). */
  add(id: NodeId, storage: MemoryStorage = new MemoryStorage(), overrides: Partial<Config> = {}): HarnessNode {
    const cfg: Config = { ...defaultConfig(id, this.rng.fork()), ...this.overrides, ...overrides, id };
    cfg.applied = storage.snapshot().metadata.index;
    const n: HarnessNode = { id, raft: new RaftNode(cfg, storage), storage, applied: [], readStates: [], holdPersist: false, held: undefined };
    this.nodes.set(id, n);
    return n;
  }

  /** Rebuilds a node from its storage alone (crash + restart; unpersisted state is lost). */
  restart(id: NodeId, overrides: Partial<Config> = {}): HarnessNode {
    const old = this.node(id);
    this.queue = this.queue.filter((m) => m.to !== id && m.from !== id);
    const n = this.add(id, old.storage, overrides);
    return n;
  }

  node(id: NodeId): HarnessNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  raft(id: NodeId): RaftNode {
    return this.node(id).raft;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) if (other !== id) this.cutLink(id, other);
  }

  cutLink(a: NodeId, b: NodeId): void {
    this.cut.add(`${a}-${b}`);
    this.cut.add(`${b}-${a}`);
  }

  healLink(a: NodeId, b: NodeId): void {
    this.cut.delete(`${a}-${b}`);
    this.cut.delete(`${b}-${a}`);
  }

  heal(): void {
    this.cut.clear();
  }

  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) this.raft(id).tick();
  }

  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) for (const node of this.nodes.values()) node.raft.tick();
  }

  /** Handles every node's Ready: persist, queue messages, apply, advance. */
  processReadies(): void {
    for (const n of this.nodes.values()) {
      while (!n.held && n.raft.hasReady()) {
        const rd = n.raft.ready();
        if (n.holdPersist) {
          n.held = rd;
          break;
        }
        this.complete(n, rd);
      }
    }
  }

  /** Completes a held Ready of a node in holdPersist mode. */
  persist(id: NodeId): void {
    const n = this.node(id);
    const rd = n.held;
    if (!rd) return;
    n.held = undefined;
    this.complete(n, rd);
  }

  private complete(n: HarnessNode, rd: Ready): void {
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    for (const m of rd.messages) this.queue.push(m);
    for (const e of rd.committedEntries) n.applied.push(e);
    for (const rs of rd.readStates) n.readStates.push(rs);
    n.raft.advance(rd);
  }

  /** Delivers queued messages (and what they cause) until the network is quiet. */
  deliverAll(maxMessages = 100000): number {
    let delivered = 0;
    this.processReadies();
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        if (this.cut.has(`${m.from}-${m.to}`)) continue;
        if (this.filter && !this.filter(m)) continue;
        const n = this.nodes.get(m.to);
        if (!n) continue;
        this.trace.push(describeMessage(m));
        n.raft.step(m);
        delivered++;
        if (delivered > maxMessages) throw new Error('network does not quiesce');
      }
      this.processReadies();
    }
    return delivered;
  }

  /** Takes the trace lines recorded since the last call. */
  takeTrace(): string[] {
    const t = [...this.trace];
    this.trace.length = 0;
    return t;
  }

  /** Elects `id`: campaign and deliver. */
  elect(id: NodeId): void {
    this.raft(id).campaign();
    this.deliverAll();
  }

  proposeString(id: NodeId, s: string): { index: number; term: number } {
    return this.raft(id).propose(new TextEncoder().encode(s));
  }
}

/** One line per message, stable for comparing traces in tests. */
export function describeMessage(m: Message): string {
  const head = `${m.from}->${m.to} ${m.type} t${m.term}`;
  switch (m.type) {
    case 'app':
      return `${head} prev=${m.index}/t${m.logTerm} ents=${m.entries.length ? `${m.entries[0].index}..${m.entries[m.entries.length - 1].index}` : '-'} commit=${m.commit}`;
    case 'appResp':
      return m.reject ? `${head} REJECT ${m.index} hint=${m.rejectHint}/t${m.logTerm}` : `${head} ok ${m.index}`;
    case 'vote':
    case 'preVote':
      return `${head} last=${m.index}/t${m.logTerm}${m.transfer ? ' transfer' : ''}`;
    case 'voteResp':
    case 'preVoteResp':
      return `${head} ${m.reject ? 'REJECT' : 'grant'}`;
    case 'heartbeat':
      return `${head} commit=${m.commit}`;
    case 'heartbeatResp':
      return head;
    case 'snap':
      return `${head} snap@${m.metadata.index} [${m.offset}+${m.chunk.byteLength}/${m.totalBytes}]`;
    case 'snapResp':
      return `${head} snap@${m.index} ${m.reject ? 'REJECT' : 'ok'} ${m.offset}`;
    case 'timeoutNow':
      return head;
  }
}
