/**
 * One simulation run from a seed: a cluster, clients doing register operations, a nemesis
 * injecting faults, invariants checked at every step, a liveness check after the faults heal,
 * and the client history checked for linearizability. Same seed, same run, bit for bit.
 */
import { HistoryRecorder, casRegisterModel, checkOperations, describeResult, failOutput, okOutput, type RegisterInput, type RegisterOutput } from '../check/index.js';
import { SeededRng } from '../raft/rng.js';
import { type Config, EntryType, type NodeId, type UnsafeFlags } from '../raft/types.js';
import { type ClientReply, type ClientRequest, SimCluster, type SimOptions } from './cluster.js';
import { InvariantViolation } from './invariants.js';
import { encodeCommand } from './kv.js';
import { Nemesis, type NemesisProfile } from './nemesis.js';

export interface RunOptions {
  unsafe?: UnsafeFlags;
  /** Force a cluster size (3 or 5); default: chosen by the seed. */
  nodes?: number;
  /** Ticks of faults before healing. */
  faultTicks?: number;
  /** Liveness bound: ticks after healing within which a leader must commit a new entry. */
  livenessTicks?: number;
  /** Skip the linearizability check (faster; invariants still checked). */
  skipCheck?: boolean;
  /** Step budget for the checker. */
  checkMaxSteps?: number;
  /** Raft settings forced on every node (experiments); validated like any configuration. */
  raft?: Partial<Config>;
  /** Per-node tick rate drift, e.g. 0.1 = rates in [0.9, 1.1] (default 0.1). */
  tickSkew?: number;
  /** Force a fault schedule (default: chosen by the seed). */
  profile?: NemesisProfile;
  /** Model a host that loses ticks missed during a stall (see SimOptions). */
  coalesceTicksOnStall?: boolean;
  /** Model a host whose leader does not forget a rebuilt replica's acknowledgements (see SimOptions). */
  rebuildKeepsMatch?: boolean;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  failure?: string;
  kind?: 'invariant' | 'linearizability' | 'liveness' | 'crash';
  nodes: number;
  steps: number;
  ops: number;
  verdict?: string;
  trace?: string[];
  /** Reads answered under a lease / after a ReadIndex round. */
  leaseReads?: number;
  readIndexReads?: number;
  counts?: SimCluster['counts'];
}

interface ClientState {
  id: number;
  busy: boolean;
  input?: RegisterInput;
  req?: ClientRequest;
  reqNo: number;
  attempt: number;
  deadline: number;
  /** The request may have been appended to some leader's log. */
  maybeApplied: boolean;
  target: NodeId;
  nextAt: number;
  lastSeen: Map<string, number | null>;
  /** Sticks to one node and ignores redirects: a client of a deposed leader that keeps reading. */
  pinned: boolean;
}

const keys = ['x', 'y'];

export function simOptionsForSeed(seed: number, opts: RunOptions): SimOptions & { profile: NemesisProfile } {
  const r = new SeededRng(seed ^ 0x5bd1e995);
  const nodes = opts.nodes ?? (r.chance(0.5) ? 3 : 5);
  const pr = r.nextFloat();
  const profile: NemesisProfile =
    opts.profile ?? (nodes === 5 && pr < 0.2 ? 'figure8' : pr < 0.35 ? 'lease' : pr < 0.5 ? 'churn' : pr < 0.65 ? 'membership' : 'mixed');
  const checkQuorum = r.chance(0.85);
  const lease = checkQuorum && r.chance(0.7) ? 6 : 0;
  return {
    nodes,
    profile,
    coalesceTicksOnStall: opts.coalesceTicksOnStall ?? false,
    rebuildKeepsMatch: opts.rebuildKeepsMatch ?? false,
    spares: 1,
    stepsPerTick: 4,
    tickSkew: opts.tickSkew ?? 0.1,
    maxPersistDelaySteps: r.pick([0, 1, 3, 12]),
    snapshotEveryEntries: r.pick([8, 20, 50, 100000]),
    snapshotKeepEntries: r.pick([0, 3]),
    raft: {
      electionTicks: 10,
      heartbeatTicks: 1,
      preVote: r.chance(0.7),
      checkQuorum,
      leaseTicks: lease,
      maxClockDriftTicks: 3,
      maxInflightMsgs: r.pick([1, 4, 64]),
      maxInflightBytes: r.pick([0, 512, 1 << 20]),
      maxSizePerMsg: r.pick([64, 256, 1 << 20]),
      maxEntriesPerMsg: profile === 'figure8' ? 1 : r.pick([1, 3, 100]),
      maxSnapshotChunkBytes: r.pick([16, 64, 4096]),
      maxInflightSnapshotChunks: r.pick([1, 2, 4]),
      maxCommittedSizePerReady: r.pick([100, 1 << 20]),
      // Drawn last so that every earlier draw (and so each seed's other settings) is unchanged.
      maxOutstandingReadies: r.pick([1, 1, 2, 4]),
      eagerCommitNews: r.chance(0.5),
      ...opts.raft,
    },
    unsafe: opts.unsafe,
  };
}

export function runSeed(seed: number, opts: RunOptions = {}): RunResult {
  const simOpts = simOptionsForSeed(seed, opts);
  const c = new SimCluster(seed, simOpts);
  const rng = c.rng.fork();
  const nemesis = new Nemesis(c, rng.fork(), simOpts.profile);
  const history = new HistoryRecorder(casRegisterModel);
  const events = new Map<number, (() => void)[]>();
  const at = (t: number, fn: () => void): void => {
    let b = events.get(t);
    if (!b) events.set(t, (b = []));
    b.push(fn);
  };
  const faultSteps = (opts.faultTicks ?? 300) * simOpts.stepsPerTick;
  const livenessSteps = (opts.livenessTicks ?? 150) * simOpts.stepsPerTick;
  const clientTimeoutSteps = 40 * simOpts.stepsPerTick;
  let nextValue = 1;
  let ops = 0;
  const clients: ClientState[] = [];
  for (let i = 0; i < 3; i++) {
    clients.push({
      id: i + 1, busy: false, reqNo: 0, attempt: 0, deadline: 0, maybeApplied: false, target: 1, nextAt: rng.nextInt(20),
      lastSeen: new Map(), pinned: simOpts.profile === 'lease' && i === 0,
    });
  }
  const clientDelay = (): number => 1 + rng.nextInt(3);

  const finish = (cl: ClientState, how: 'ok' | 'fail' | 'info', out?: RegisterOutput): void => {
    if (!cl.busy) return;
    cl.busy = false;
    cl.nextAt = c.now + rng.nextInt(8);
    if (how === 'ok') history.ok(cl.id, out!, c.now);
    else if (how === 'fail') history.fail(cl.id, c.now);
    else history.info(cl.id, c.now);
  };

  const sendAttempt = (cl: ClientState): void => {
    const attempt = ++cl.attempt;
    const target = cl.target;
    const req = cl.req!;
    at(c.now + clientDelay(), () => {
      if (!cl.busy || cl.attempt !== attempt) return;
      if (req.kind !== 'read') cl.maybeApplied = cl.maybeApplied || c.node(target).raft.currentRole === 'leader';
      c.request(target, req, cl.id, cl.reqNo, (r: ClientReply) => {
        at(c.now + clientDelay(), () => onReply(cl, attempt, r));
      });
    });
  };

  const onReply = (cl: ClientState, attempt: number, r: ClientReply): void => {
    if (!cl.busy || cl.attempt !== attempt) return;
    const req = cl.req!;
    if (r.redirect) {
      if (cl.pinned && c.node(cl.target).raft.currentRole !== 'leader') {
        // Re-pin to whoever claims leadership now (possibly a stale leader).
        const l = c.nodes.find((n) => n.up && n.raft.currentRole === 'leader');
        if (l) cl.target = l.id;
      } else if (!cl.pinned) {
        cl.target = r.leader && r.leader > 0 ? r.leader : 1 + rng.nextInt(c.nodes.length);
      }
      if (cl.pinned) {
        finish(cl, req.kind === 'read' ? 'fail' : req.kind === 'cas' || cl.maybeApplied ? 'info' : 'fail');
        return;
      }
      sendAttempt(cl);
      return;
    }
    if (req.kind === 'read') {
      if (r.ok) {
        cl.lastSeen.set(req.key, r.value ?? null);
        finish(cl, 'ok', { status: 'ok', value: r.value ?? null });
      } else finish(cl, 'fail');
      return;
    }
    if (!r.ok) {
      // Definitely not applied. A CAS that never ran is not a failed compare: record it as
      // unknown (sound), a write as failed (it constrains nothing).
      finish(cl, req.kind === 'cas' ? 'info' : 'fail');
      return;
    }
    if (req.kind === 'write') {
      cl.lastSeen.set(req.key, req.value);
      finish(cl, 'ok', okOutput);
    } else if (r.value === 1) {
      cl.lastSeen.set(req.key, req.to);
      finish(cl, 'ok', okOutput);
    } else {
      finish(cl, 'ok', failOutput);
    }
  };

  const startOp = (cl: ClientState): void => {
    const key = keys[rng.nextInt(keys.length)];
    // A pinned client only reads: its reads are what a stale leaseholder could get wrong, and
    // writes stuck on a cut-off node would only add unknown outcomes for the checker.
    const p = cl.pinned ? 0 : rng.nextFloat();
    let input: RegisterInput;
    let req: ClientRequest;
    if (p < 0.4) {
      input = { f: 'read', key };
      req = { kind: 'read', key };
    } else if (p < 0.8) {
      const value = nextValue++;
      input = { f: 'write', key, value };
      req = { kind: 'write', key, value };
    } else {
      const from = cl.lastSeen.get(key) ?? null;
      const to = nextValue++;
      input = { f: 'cas', key, from, to };
      req = { kind: 'cas', key, from, to };
    }
    cl.busy = true;
    cl.input = input;
    cl.req = req;
    cl.reqNo++;
    cl.maybeApplied = false;
    cl.deadline = c.now + (cl.pinned ? clientTimeoutSteps / 4 : simOpts.profile === 'lease' ? clientTimeoutSteps / 4 : clientTimeoutSteps);
    ops++;
    history.invoke(cl.id, input, c.now);
    sendAttempt(cl);
  };

  const liveness = { healedAt: -1, probe: undefined as { node: NodeId; index: number; term: number } | undefined, done: false, probeNo: 0 };
  const endAt = faultSteps + livenessSteps + 60 * simOpts.stepsPerTick;

  try {
    while (c.now < endAt) {
      c.step();
      const due = events.get(c.now);
      if (due) {
        events.delete(c.now);
        for (const fn of due) fn();
      }
      if (c.now < faultSteps) nemesis.maybeAct();
      else if (liveness.healedAt < 0) {
        nemesis.healAll();
        liveness.healedAt = c.now;
        c.note('healed');
      }
      if (liveness.healedAt >= 0 && !liveness.done) {
        checkLiveness(c, liveness);
        if (!liveness.done && c.now - liveness.healedAt > livenessSteps) {
          throw new LivenessFailure(`liveness: no leader committed a new entry within ${livenessSteps / simOpts.stepsPerTick} ticks after healing`);
        }
      }
      for (const cl of clients) {
        if (cl.busy && c.now >= cl.deadline) {
          // Timed out: a write/CAS that may have been appended has an unknown outcome.
          if (cl.req!.kind === 'read') finish(cl, 'fail');
          else finish(cl, cl.maybeApplied ? 'info' : cl.req!.kind === 'cas' ? 'info' : 'fail');
          // Try elsewhere next time: the node may be cut off or deposed.
          if (!cl.pinned) cl.target = simOpts.profile === 'lease' ? (c.leader()?.id ?? 1 + rng.nextInt(c.nodes.length)) : 1 + rng.nextInt(c.nodes.length);
        } else if (!cl.busy && c.now >= cl.nextAt && c.now < endAt - 45 * simOpts.stepsPerTick) {
          startOp(cl);
        }
      }
    }
  } catch (e) {
    const kind = e instanceof InvariantViolation ? 'invariant' : e instanceof LivenessFailure ? 'liveness' : 'crash';
    const msg = e instanceof Error ? (kind === 'crash' ? (e.stack ?? e.message) : e.message) : String(e);
    return { seed, ok: false, failure: msg, kind, nodes: simOpts.nodes, steps: c.now, ops, trace: [...c.trace.slice(-60), ...c.describe()] };
  }
  for (const cl of clients) if (cl.busy) finish(cl, 'info');
  c.collectReadCounters();
  const reads = { leaseReads: c.reads.lease, readIndexReads: c.reads.readIndex, counts: { ...c.counts } };
  if (opts.skipCheck) return { seed, ok: true, nodes: simOpts.nodes, steps: c.now, ops, ...reads };
  const result = checkOperations(casRegisterModel, history.operations(), { maxSteps: opts.checkMaxSteps ?? 200_000_000 });
  if (result.verdict === 'not-linearizable') {
    return {
      seed, ok: false, kind: 'linearizability', verdict: result.verdict, nodes: simOpts.nodes, steps: c.now, ops,
      failure: describeResult(casRegisterModel, result), trace: c.trace.slice(-60),
    };
  }
  return { seed, ok: true, nodes: simOpts.nodes, steps: c.now, ops, verdict: result.verdict, ...reads };
}

class LivenessFailure extends Error {}

function checkLiveness(c: SimCluster, l: { probe: { node: NodeId; index: number; term: number } | undefined; done: boolean; probeNo: number }): void {
  if (l.probe) {
    const n = c.node(l.probe.node);
    const newer = c.leader();
    if (!n.up || n.raft.currentTerm !== l.probe.term || n.raft.currentRole !== 'leader' || (newer && newer.raft.currentTerm > l.probe.term)) {
      // Probe again at the newest leader (without check-quorum a deposed leader may never learn it).
      l.probe = undefined;
    } else if (n.raft.log.applied >= l.probe.index) {
      if (n.raft.log.term(l.probe.index) === l.probe.term || n.raft.log.firstIndex() > l.probe.index) l.done = true;
      else l.probe = undefined;
      return;
    } else {
      return;
    }
  }
  const leader = c.leader();
  if (!leader) return;
  try {
    const ref = leader.raft.propose(encodeCommand({ f: 'write', key: '_liveness', value: ++l.probeNo, client: 0, req: l.probeNo }));
    l.probe = { node: leader.id, index: ref.index, term: ref.term };
  } catch {
    // Transfer in progress or not really leader: try again next step.
  }
}

void EntryType;
