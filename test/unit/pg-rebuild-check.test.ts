/**
 * The PG leader's judgement of whether one replica may be rebuilt in place now
 * (src/cluster/pg-rebuild-check.ts): only when the other voters make a quorum without it, and
 * never during a move.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { judgeRebuild, type RebuildCheckInput } from '../../src/cluster/pg-rebuild-check.js';
import { caughtUpSlackEntries } from '../../src/cluster/pg-move-plan.js';
import type { ConfState, ProgressState } from '../../src/raft/index.js';

function conf(voters: number[], learners: number[] = [], votersOutgoing: number[] = []): ConfState {
  return { voters, learners, votersOutgoing, learnersNext: [], autoLeave: votersOutgoing.length > 0 };
}

type Pr = [match: number, state: ProgressState, recentActive: boolean];

function input(over: Partial<RebuildCheckInput> & { prs?: Record<number, Pr> }): RebuildCheckInput {
  const prs = over.prs ?? { 1: [100, 'replicate', true], 2: [100, 'replicate', true], 3: [100, 'replicate', true] };
  const progress = new Map(Object.entries(prs).map(([id, [match, state, recentActive]]) => [Number(id), { match, state, recentActive }]));
  return { leader: 1, node: 3, conf: conf([1, 2, 3]), changePending: false, progress, connected: new Set([2, 3, 4, 5]), rebuilding: new Set(), commitIndex: 100, ...over };
}

test('a healthy three-voter PG lets any one follower be rebuilt', () => {
  assert.deepEqual(judgeRebuild(input({})), { ok: true, healthyVoters: [1, 2] });
  assert.deepEqual(judgeRebuild(input({ node: 2 })), { ok: true, healthyVoters: [1, 3] });
});

test('the other follower down, lagging, probing or silent: the PG would have no quorum', () => {
  const cases: [Record<number, Pr>, string][] = [
    [{ 1: [100, 'replicate', true], 3: [100, 'replicate', true] }, 'no progress'],
    [{ 1: [100, 'replicate', true], 2: [100 - caughtUpSlackEntries - 1, 'replicate', true], 3: [100, 'replicate', true] }, `at ${100 - caughtUpSlackEntries - 1} of 100`],
    [{ 1: [100, 'replicate', true], 2: [100, 'probe', true], 3: [100, 'replicate', true] }, 'in probe'],
    [{ 1: [100, 'replicate', true], 2: [100, 'replicate', false], 3: [100, 'replicate', true] }, 'silent for an election timeout'],
  ];
  for (const [prs, why] of cases) {
    const v = judgeRebuild(input({ prs }));
    assert.equal(v.ok, false);
    assert.equal(!v.ok && v.code, 'PG_QUORUM_AT_RISK');
    assert.match(!v.ok ? v.reason : '', /needs 2 of its 3 voters, and only 1 of the others \(node 1\) is connected and caught up; not: 2 \(/);
    assert.ok(!v.ok && v.reason.includes(`not: 2 (${why})`), !v.ok ? v.reason : '');
  }
  // Being rebuilt itself (agreed a moment ago): two replicas of one PG are never agreed to at once.
  const both = judgeRebuild(input({ rebuilding: new Set([2]) }));
  assert.equal(!both.ok && both.code, 'PG_QUORUM_AT_RISK');
  assert.ok(!both.ok && both.reason.includes('not: 2 (being rebuilt)'));
  // Disconnected (killed a moment ago: its progress still looks fine).
  const cut = judgeRebuild(input({ connected: new Set([3]) }));
  assert.equal(!cut.ok && cut.code, 'PG_QUORUM_AT_RISK');
  assert.ok(!cut.ok && cut.reason.includes('not: 2 (not connected)'));
  // Within the slack is caught up.
  const near = judgeRebuild(input({ prs: { 1: [100, 'replicate', true], 2: [100 - caughtUpSlackEntries, 'replicate', true], 3: [0, 'probe', false] } }));
  assert.equal(near.ok, true);
});

test('a five-voter PG tolerates one other voter down, not two', () => {
  const five = conf([1, 2, 3, 4, 5]);
  const up: Pr = [100, 'replicate', true];
  const down: Pr = [10, 'probe', false];
  assert.equal(judgeRebuild(input({ conf: five, prs: { 2: up, 3: up, 4: down, 5: up } })).ok, true);
  const v = judgeRebuild(input({ conf: five, prs: { 2: up, 3: up, 4: down, 5: down } }));
  assert.equal(!v.ok && v.code, 'PG_QUORUM_AT_RISK');
});

test('a single-voter PG cannot rebuild its only replica', () => {
  const v = judgeRebuild(input({ conf: conf([1]), node: 1, prs: { 1: [100, 'replicate', true] } }));
  assert.equal(!v.ok && v.code, 'PG_QUORUM_AT_RISK');
});

test('refused during a move, and for a node that is not a voter', () => {
  for (const over of [{ conf: conf([1, 2, 3], [4]) }, { conf: conf([1, 2, 4], [], [1, 2, 3]) }, { changePending: true }]) {
    const v = judgeRebuild(input(over));
    assert.equal(!v.ok && v.code, 'MOVE_UNDER_WAY');
  }
  const v = judgeRebuild(input({ node: 7 }));
  assert.equal(!v.ok && v.code, 'NOT_A_VOTER');
});
