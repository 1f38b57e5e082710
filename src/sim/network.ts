/**
 * The simulated network: every message is delayed, and may be dropped, duplicated (and so
 * reordered); a partition matrix decides which links are cut, both when a message is sent
 * and when it would arrive.
 */
import type { Message, NodeId } from '../raft/types.js';
import type { SeededRng } from '../raft/rng.js';

export interface NetworkFaults {
  dropRate: number;
  dupRate: number;
  /** Delay in steps is 1 + uniform[0, maxDelaySteps). */
  maxDelaySteps: number;
}

export class Network {
  faults: NetworkFaults = { dropRate: 0, dupRate: 0, maxDelaySteps: 3 };
  private readonly buckets = new Map<number, Message[]>();
  private readonly cut: boolean[][];
  delivered = 0;
  dropped = 0;

  constructor(
    private readonly rng: SeededRng,
    readonly maxNodeId: NodeId,
  ) {
    this.cut = [];
    for (let i = 0; i <= maxNodeId; i++) this.cut.push(new Array<boolean>(maxNodeId + 1).fill(false));
  }

  linked(a: NodeId, b: NodeId): boolean {
    return !this.cut[a][b];
  }

  /** Cuts every link between the groups (nodes in no group keep their links). */
  partition(groups: NodeId[][]): void {
    this.heal();
    const groupOf = new Map<NodeId, number>();
    groups.forEach((g, i) => g.forEach((n) => groupOf.set(n, i)));
    for (const [a, ga] of groupOf) for (const [b, gb] of groupOf) if (ga !== gb) this.cut[a][b] = true;
  }

  /** Cuts exactly the listed links (both directions). */
  cutLinks(pairs: [NodeId, NodeId][]): void {
    for (const [a, b] of pairs) {
      this.cut[a][b] = true;
      this.cut[b][a] = true;
    }
  }

  heal(): void {
    for (const row of this.cut) row.fill(false);
  }

  send(now: number, m: Message): void {
    if (this.cut[m.from][m.to] || this.rng.chance(this.faults.dropRate)) {
      this.dropped++;
      return;
    }
    this.enqueue(now + 1 + this.rng.nextInt(this.faults.maxDelaySteps), m);
    if (this.rng.chance(this.faults.dupRate)) this.enqueue(now + 1 + this.rng.nextInt(this.faults.maxDelaySteps * 3), m);
  }

  private enqueue(at: number, m: Message): void {
    let b = this.buckets.get(at);
    if (!b) {
      b = [];
      this.buckets.set(at, b);
    }
    b.push(m);
  }

  /**
   * Drops every message `from` sent that is still under way: what a stopped process had sent
   * on connections that then close (a host's rebuild asks its leader over the same connection
   * only after everything it sent before, so nothing older can arrive after that request).
   */
  dropFrom(from: NodeId): void {
    for (const [at, b] of this.buckets) {
      const kept = b.filter((m) => m.from !== from);
      this.dropped += b.length - kept.length;
      if (kept.length === 0) this.buckets.delete(at);
      else this.buckets.set(at, kept);
    }
  }

  /** Messages due at `now` whose link is intact. */
  take(now: number): Message[] {
    const b = this.buckets.get(now);
    if (!b) return [];
    this.buckets.delete(now);
    const out: Message[] = [];
    for (const m of b) {
      if (this.cut[m.from][m.to]) this.dropped++;
      else out.push(m);
    }
    this.delivered += out.length;
    return out;
  }
}
