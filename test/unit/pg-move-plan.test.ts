/**
 * The PG leader's next move towards the map's replica set (src/cluster/pg-move-plan.ts):
 * hand over leadership when not wanted, learners first, one joint swap once they caught up,
 * nothing while a change is in flight.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { caughtUpSlackEntries, confMatchesTarget, planMove, type MoveInput } from '../../src/cluster/pg-move-plan.js';
import type { ConfState, ProgressState } from '../../src/raft/index.js';

function conf(voters: number[], learners: number[] = [], votersOutgoing: number[] = []): ConfState {
  return { voters, learners, votersOutgoing, learnersNext: [], autoLeave: votersOutgoing.length > 0 };
}

/** `match`: per node, [match index, progress state, heard from lately (default true)]. */
function input(over: Partial<MoveInput> & { match?: Record<number, [number, ProgressState, boolean?]> }): MoveInput {
  const match = over.match ?? {};
  const progress = new Map(Object.entries(match).map(([id, [m, state, active]]) => [Number(id), { match: m, state, recentActive: active ?? true }]));
  return { self: 1, conf: conf([1, 2, 3]), changePending: false, target: [1, 2, 3], progress, commitIndex: 100, lastIndex: 100, ...over };
}

test('a configuration equal to the target (in any order) needs nothing', () => {
  assert.deepEqual(planMove(input({ target: [3, 1, 2] })), { kind: 'done' });
  assert.ok(confMatchesTarget(conf([1, 2, 3]), [2, 3, 1]));
  assert.ok(!confMatchesTarget(conf([1, 2, 3], [4]), [1, 2, 3]), 'a learner left over is not the target');
  assert.ok(!confMatchesTarget(conf([1, 2, 4], [], [1, 2, 3]), [1, 2, 4]), 'a joint configuration is not the target');
});

test('a wanted node that is not a member is added as a learner, alone', () => {
  assert.deepEqual(planMove(input({ target: [4, 1, 2] })), { kind: 'addLearners', nodes: [4] });
  assert.deepEqual(planMove(input({ target: [1, 5, 4] })), { kind: 'addLearners', nodes: [4, 5] });
});

test('learners catching up are waited for: replicating and within the slack of the commit index', () => {
  const base = { conf: conf([1, 2, 3], [4]), target: [1, 2, 4] };
  assert.equal(planMove(input({ ...base, match: { 4: [0, 'snapshot'] } })).kind, 'wait');
  assert.equal(planMove(input({ ...base, match: { 4: [100 - caughtUpSlackEntries - 1, 'replicate'] } })).kind, 'wait');
  assert.equal(planMove(input({ ...base, match: { 4: [100, 'probe'] } })).kind, 'wait');
  assert.equal(planMove(input({ ...base })).kind, 'wait', 'no progress known for the learner');
});

test('caught-up learners are promoted and unwanted members removed in ONE joint change', () => {
  const step = planMove(input({ conf: conf([1, 2, 3], [4, 6]), target: [1, 2, 4], match: { 4: [100 - caughtUpSlackEntries, 'replicate'], 6: [0, 'probe'] } }));
  assert.deepEqual(step, {
    kind: 'swap',
    changes: [
      { type: 'addVoter', nodeId: 4 },
      { type: 'removeNode', nodeId: 3 },
      { type: 'removeNode', nodeId: 6 },
    ],
  });
});

test('nothing is decided while a change is in flight', () => {
  assert.equal(planMove(input({ conf: conf([1, 2, 4], [], [1, 2, 3]), target: [1, 2, 4] })).kind, 'wait');
  assert.equal(planMove(input({ conf: conf([1, 2, 3], [4]), changePending: true, target: [1, 2, 4], match: { 4: [100, 'replicate'] } })).kind, 'wait');
});

test('a leader the map does not want hands leadership to the most caught-up wanted voter first', () => {
  const step = planMove(input({ target: [2, 3, 4], match: { 1: [100, 'replicate'], 2: [90, 'replicate'], 3: [99, 'replicate'] } }));
  assert.deepEqual(step, { kind: 'transferLeader', to: 3 });
});

test('a leader the map does not want never hands over to a wanted voter that is down: the move goes on without it', () => {
  // Node 2, the only wanted voter, is down (probing, or not heard from): learners are added instead.
  for (const down of [{ 2: [100, 'probe'] }, { 2: [100, 'replicate', false] }, {}] as Record<number, [number, ProgressState, boolean?]>[]) {
    const step = planMove(input({ target: [2, 4, 5], match: { 1: [100, 'replicate'], 3: [100, 'replicate'], ...down } }));
    assert.deepEqual(step, { kind: 'addLearners', nodes: [4, 5] }, JSON.stringify(down));
  }
  // With a wanted voter up beside it, that one gets the leadership, whatever the other's match.
  const step = planMove(input({ target: [2, 3, 4], match: { 1: [100, 'replicate'], 2: [100, 'probe'], 3: [50, 'replicate'] } }));
  assert.deepEqual(step, { kind: 'transferLeader', to: 3 });
});

test('a leader the map does not want passes over a wanted voter that asked to be rebuilt: it would hand the leadership straight on', () => {
  const match: Record<number, [number, ProgressState, boolean?]> = { 1: [100, 'replicate'], 2: [100, 'replicate'], 3: [90, 'replicate'] };
  assert.deepEqual(planMove(input({ target: [2, 3, 4], match })), { kind: 'transferLeader', to: 2 });
  assert.deepEqual(planMove(input({ target: [2, 3, 4], match, askedToRebuild: new Set([2]) })), { kind: 'transferLeader', to: 3 });
  // The only wanted voter asked: the move goes on without a hand-over, as if it were down.
  assert.deepEqual(planMove(input({ target: [2, 4, 5], match, askedToRebuild: new Set([2]) })), { kind: 'addLearners', nodes: [4, 5] });
});

test('a leader with no wanted voter to hand over to adds the learners and removes itself in the swap', () => {
  assert.deepEqual(planMove(input({ conf: conf([1]), target: [2] })), { kind: 'addLearners', nodes: [2] });
  const step = planMove(input({ conf: conf([1], [2]), target: [2], match: { 2: [100, 'replicate'] } }));
  assert.deepEqual(step, { kind: 'swap', changes: [{ type: 'addVoter', nodeId: 2 }, { type: 'removeNode', nodeId: 1 }] });
});

test('a learner the map no longer wants is removed once the voters are right', () => {
  assert.deepEqual(planMove(input({ conf: conf([1, 2, 3], [4]), target: [1, 2, 3] })), { kind: 'swap', changes: [{ type: 'removeNode', nodeId: 4 }] });
});
