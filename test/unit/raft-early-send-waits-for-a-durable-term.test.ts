/**
 * A leader's appends may leave before its Ready is durable only once its term is
 * (raft/early-send.ts). A single voter elects itself within one step, so the Ready that
 * carries its new term also carries its first appends to a learner. Sent early, and the
 * leader crashing before that Ready is written, the restarted leader wins the same term again
 * and writes other entries at the same indexes: the learner would keep and apply an entry the
 * leader never had.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RaftNode, MemoryStorage, SeededRng, defaultConfig, emptyConfState, leavesBeforePersist, type Message, type Ready } from '../../src/raft/index.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function storage(): MemoryStorage {
  const s = new MemoryStorage([1]);
  const cs = emptyConfState();
  cs.voters = [1];
  cs.learners = [2];
  s.setConfState(cs);
  return s;
}

function node(id: number, s: MemoryStorage, seed: number): RaftNode {
  return new RaftNode({ ...defaultConfig(id, new SeededRng(seed)), maxOutstandingReadies: 4, applied: s.snapshot().metadata.index }, s);
}

/** Persists a Ready, records what it applies, advances; returns its messages. */
function complete(n: RaftNode, s: MemoryStorage, rd: Ready, applied: string[]): Message[] {
  if (rd.snapshot) s.applySnapshot(rd.snapshot);
  s.append(rd.entries);
  if (rd.hardState) s.setHardState(rd.hardState);
  for (const e of rd.committedEntries) if (e.data.byteLength > 0) applied.push(`${e.index}@${e.term}:${new TextDecoder().decode(e.data)}`);
  n.advance(rd);
  return rd.messages;
}

/**
 * The run: node 1 (the voter) takes two Readies without writing them, sending early what the
 * rule lets leave (everything a leader sends, when `ignoreTerm`), then crashes; restarted, it
 * leads again and writes Y. Returns what each node applied.
 */
function run(ignoreTerm: boolean): { leader: string[]; learner: string[]; restartedTerm: number; firstTerm: number } {
  const s1 = storage();
  const s2 = storage();
  let n1 = node(1, s1, 1);
  const n2 = node(2, s2, 2);
  const leader: string[] = [];
  const learner: string[] = [];
  const toLearner = (msgs: Message[]): void => {
    for (const m of msgs) n2.step(m);
    while (n2.hasReady()) for (const m of complete(n2, s2, n2.ready(), learner)) n1.step(m);
  };
  n1.campaign();
  assert.equal(n1.currentRole, 'leader', 'a single voter elects itself at once');
  const firstTerm = n1.currentTerm;
  for (const step of [() => undefined, () => void n1.propose(text('X'))]) {
    step();
    const rd = n1.ready();
    const termDurable = ignoreTerm || s1.hardState.term >= n1.currentTerm;
    toLearner(rd.messages.filter((m) => leavesBeforePersist(m, n1.currentRole, termDurable)));
  }
  // Node 1 crashes: neither Ready was written.
  n1 = node(1, s1, 3);
  for (let i = 0; i < 50 && n1.currentRole !== 'leader'; i++) n1.tick();
  assert.equal(n1.currentRole, 'leader');
  const restartedTerm = n1.currentTerm;
  const pump = (): void => {
    for (let k = 0; k < 20 && n1.hasReady(); k++) toLearner(complete(n1, s1, n1.ready(), leader));
  };
  pump();
  n1.propose(text('Y'));
  pump();
  for (let i = 0; i < 3; i++) {
    n1.tick();
    pump();
  }
  return { leader, learner, restartedTerm, firstTerm };
}

test('a single voter sends nothing before its new term is durable, so a learner never keeps an entry the restarted leader does not have', () => {
  const r = run(false);
  assert.ok(r.leader.some((e) => e.endsWith(':Y')), `the leader applied Y: ${r.leader.join(', ')}`);
  assert.deepEqual(r.learner, r.leader, 'the learner applies what the leader applies');
});

test('sending the first appends before the term is durable lets the restarted leader reuse the term with other entries (why the rule exists)', () => {
  const r = run(true);
  assert.equal(r.restartedTerm, r.firstTerm, 'the restarted voter wins the same term again');
  assert.notDeepEqual(r.learner, r.leader, `learner ${r.learner.join(', ')} against leader ${r.leader.join(', ')}`);
  assert.ok(r.learner.some((e) => e.endsWith(':X')), 'the learner applied X, which the leader never wrote');
});
