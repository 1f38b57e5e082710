import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaderAffinity, maxHandoverLagEntries, mayHandOver, type HandoverInput } from '../../src/cluster/leader-affinity.js';
import type { ConfState } from '../../src/raft/index.js';

const cfg = { minRequestsPerRound: 10, share: 0.75, confirmRounds: 2, cooldownMs: 30_000 };
const yes = (): boolean => true;

function feed(a: LeaderAffinity, group: number, origins: Record<number, number>): void {
  for (const [origin, n] of Object.entries(origins)) for (let i = 0; i < n; i++) a.note(group, Number(origin));
}

test('a PG whose requests come from one other gateway for two rounds is handed to that node', () => {
  const a = new LeaderAffinity(cfg);
  feed(a, 7, { 2: 30, 1: 2 });
  assert.deepEqual(a.round(1000, 1, yes), [], 'one round is not enough');
  feed(a, 7, { 2: 30, 1: 2 });
  assert.deepEqual(a.round(2000, 1, yes), [{ group: 7, to: 2 }]);
});

test('no hand-over for local load, light load, a split load, or a target the caller refuses', () => {
  const a = new LeaderAffinity(cfg);
  for (let r = 1; r <= 3; r++) {
    feed(a, 1, { 1: 50 }); // served through this node's own gateway
    feed(a, 2, { 3: 5 }); // too few requests
    feed(a, 3, { 2: 20, 3: 20 }); // no node dominates
    feed(a, 4, { 2: 40 }); // dominated, but refused by the caller
    assert.deepEqual(a.round(r * 1000, 1, (g) => g !== 4), []);
  }
});

test('a dominating node must hold two rounds in a row, and a PG moves at most once per cooldown', () => {
  const a = new LeaderAffinity(cfg);
  feed(a, 5, { 2: 40 });
  a.round(1000, 1, yes);
  feed(a, 5, { 3: 40 }); // another node takes over: the streak restarts
  assert.deepEqual(a.round(2000, 1, yes), []);
  feed(a, 5, { 3: 40 });
  assert.deepEqual(a.round(3000, 1, yes), [{ group: 5, to: 3 }]);
  for (let t = 4000; t < 33_000; t += 1000) {
    feed(a, 5, { 2: 40 });
    assert.deepEqual(a.round(t, 3, yes), [], `no second hand-over at ${t} ms`);
  }
  feed(a, 5, { 2: 40 });
  assert.deepEqual(a.round(33_000, 3, yes), [{ group: 5, to: 2 }]);
});

test('a leader hands over only to a wanted, settled, caught-up, connected voter that did not ask to be rebuilt', () => {
  const conf = (voters: number[], learners: number[] = [], votersOutgoing: number[] = []): ConfState => ({ voters, learners, votersOutgoing, learnersNext: [], autoLeave: false });
  const base: HandoverInput = {
    to: 2,
    wanted: [1, 2, 3],
    conf: conf([1, 2, 3]),
    leadTransferee: 0,
    progress: new Map([[2, { match: 1000 - maxHandoverLagEntries, state: 'replicate' as const }]]),
    lastIndex: 1000,
    askedToRebuild: false,
    connected: true,
  };
  assert.equal(mayHandOver(base), true);
  const refused: [string, Partial<HandoverInput>][] = [
    ['not wanted by the map', { wanted: [1, 3, 4] }],
    ['not a voter', { conf: conf([1, 3, 4], [2]) }],
    ['a learner being added', { conf: conf([1, 2, 3], [4]) }],
    ['a joint configuration', { conf: conf([1, 2, 4], [], [1, 2, 3]) }],
    ['a transfer under way', { leadTransferee: 3 }],
    ['no progress', { progress: new Map() }],
    ['probing', { progress: new Map([[2, { match: 1000, state: 'probe' as const }]]) }],
    ['too far behind', { progress: new Map([[2, { match: 1000 - maxHandoverLagEntries - 1, state: 'replicate' as const }]]) }],
    ['asked to be rebuilt', { askedToRebuild: true }],
    ['not connected', { connected: false }],
  ];
  for (const [why, over] of refused) assert.equal(mayHandOver({ ...base, ...over }), false, why);
});
