/**
 * A gateway with no replica of a PG forwards its pieces to the leader it knows, and has no
 * Raft state of its own to tell it when that leader is replaced. A leader that stops
 * answering without closing its connections (a frozen process, a stalled VM) would hold every
 * piece sent to it for the whole request timeout, though the other replicas elected a new
 * leader within an election timeout.
 *
 * So while pieces to (group, leader) have been waiting longer than `probeAfterMs`, the watch
 * asks the group's other replicas, one per `probeIntervalMs` in turn, whom they follow. When
 * one names another node, every piece waiting on the old leader is abandoned (outcome
 * unknown, as on a timeout) and the caller retries at the named node under the same request
 * id, so a write that did land on the old leader still applies once. One probe loop serves all
 * the pieces waiting on the same (group, leader); a replica that cannot answer (down, cut off,
 * from before this op) is skipped until its turn comes again.
 */
import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { assert } from '../common/assert.js';

export interface LeaderProbe {
  /** The node `peer` follows for `group` (0: it knows none). Rejects if `peer` cannot answer. */
  (group: number, peer: number): Promise<number>;
}

export interface RemoteLeaderWatchOptions {
  /** A piece waiting this long starts the probes (answers normally take milliseconds). */
  probeAfterMs: number;
  /** One probe per interval while pieces still wait. */
  probeIntervalMs: number;
}

/** The view of one waiting piece. */
export interface LeaderWatchTicket {
  /** Aborts when another replica names a leader other than the one the piece waits on. */
  readonly signal: AbortSignal;
  /** The node named instead (0 until the signal aborts). */
  readonly replacedBy: number;
  /** The piece settled: it no longer needs the watch. */
  release(): void;
}

interface Watched {
  readonly group: number;
  readonly leader: number;
  /** The replicas to ask: the group's other replicas, in turn. */
  readonly others: readonly number[];
  readonly controller: AbortController;
  /** Waiting pieces: ticket number → when it started (ms, monotonic), oldest first. */
  readonly waiting: Map<number, number>;
  nextPeer: number;
  replacedBy: number;
  timer: NodeJS.Timeout | null;
  probing: boolean;
}

export class RemoteLeaderWatch {
  /** group → leader → its watch (no key built per piece). */
  private readonly watched = new Map<number, Map<number, Watched>>();
  private stopped = false;
  private nextTicket = 0;

  constructor(
    private readonly probe: LeaderProbe,
    private readonly opts: RemoteLeaderWatchOptions,
  ) {
    assert(opts.probeAfterMs > 0 && opts.probeIntervalMs > 0, 'probe delays must be positive');
  }

  /** How many (group, leader) pairs are probed now or armed to be (for tests). */
  get armed(): number {
    let n = 0;
    for (const byLeader of this.watched.values()) for (const w of byLeader.values()) if (w.timer !== null || w.probing) n++;
    return n;
  }

  /** Watches `leader` of `group` (whose replicas are `replicas`) for one piece sent to it. */
  watch(group: number, leader: number, replicas: readonly number[]): LeaderWatchTicket {
    let byLeader = this.watched.get(group);
    if (!byLeader) {
      byLeader = new Map();
      this.watched.set(group, byLeader);
    }
    let w = byLeader.get(leader);
    if (!w || !sameOthers(w.others, replicas, leader)) {
      w = {
        group,
        leader,
        others: replicas.filter((r) => r !== leader),
        controller: new AbortController(),
        waiting: new Map(),
        nextPeer: 0,
        replacedBy: 0,
        timer: null,
        probing: false,
      };
      // Every piece waiting on this leader listens to the one signal (32 in flight is normal).
      setMaxListeners(0, w.controller.signal);
      byLeader.set(leader, w);
    }
    const ticket = this.nextTicket++;
    w.waiting.set(ticket, performance.now());
    if (w.timer === null && !w.probing && w.others.length > 0 && !this.stopped) this.arm(w, this.opts.probeAfterMs);
    const entry = w;
    let released = false;
    return {
      signal: entry.controller.signal,
      get replacedBy() {
        return entry.replacedBy;
      },
      release: () => {
        if (released) return;
        released = true;
        entry.waiting.delete(ticket);
        // Kept for the next piece (no allocation per piece); idle, it has no timer.
        if (entry.waiting.size === 0) this.disarm(entry);
      },
    };
  }

  /** No more probes (the node is stopping); pieces still waiting keep their signals. */
  stop(): void {
    this.stopped = true;
    for (const byLeader of this.watched.values()) for (const w of byLeader.values()) this.disarm(w);
  }

  private arm(w: Watched, delayMs: number): void {
    w.timer = setTimeout(() => void this.probeOnce(w), delayMs);
    w.timer.unref();
  }

  private disarm(w: Watched): void {
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
  }

  /** Milliseconds until the oldest waiting piece has waited `probeAfterMs` (≤ 0: it has). */
  private untilDue(w: Watched): number {
    const oldest = w.waiting.values().next();
    return oldest.done ? Number.POSITIVE_INFINITY : oldest.value + this.opts.probeAfterMs - performance.now();
  }

  private async probeOnce(w: Watched): Promise<void> {
    w.timer = null;
    if (this.stopped || w.waiting.size === 0 || w.controller.signal.aborted) return;
    // Pieces come and go under steady load: probe only while one of them is overdue.
    const due = this.untilDue(w);
    if (due > 0) {
      this.arm(w, due);
      return;
    }
    const peer = w.others[w.nextPeer % w.others.length];
    w.nextPeer++;
    w.probing = true;
    let named = 0;
    try {
      named = await this.probe(w.group, peer);
    } catch {
      named = 0; // that replica cannot say: ask the next one at the next interval
    }
    w.probing = false;
    if (this.stopped || w.waiting.size === 0 || w.controller.signal.aborted) return;
    if (named !== 0 && named !== w.leader) {
      w.replacedBy = named;
      // Later pieces to the old leader start a fresh watch; the waiting ones are abandoned.
      const byLeader = this.watched.get(w.group);
      if (byLeader?.get(w.leader) === w) byLeader.delete(w.leader);
      w.controller.abort();
      return;
    }
    this.arm(w, Math.max(this.opts.probeIntervalMs, this.untilDue(w)));
  }
}

/** True when `others` is `replicas` without `leader`, in order (the PG's replicas did not change). */
function sameOthers(others: readonly number[], replicas: readonly number[], leader: number): boolean {
  let i = 0;
  for (const r of replicas) {
    if (r === leader) continue;
    if (others[i++] !== r) return false;
  }
  return i === others.length;
}
