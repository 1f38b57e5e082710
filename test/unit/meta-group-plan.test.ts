/**
 * Group 0's next membership step (src/cluster/meta-group-plan.ts): grow to the wanted voters,
 * replace a voter marked out or gone from the map (replacement first, then removal), one
 * change at a time, never at the cost of the quorum, and a leader that leaves hands over first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkMetaRemoval, planMetaGroup, quorumOf, sameConfState, type MetaGroupInput } from '../../src/cluster/meta-group-plan.js';
import type { ConfState, ProgressState } from '../../src/raft/index.js';
import type { NodeState } from '../../src/cluster/map.js';

function conf(voters: number[], votersOutgoing: number[] = []): ConfState {
  return { voters, learners: [], votersOutgoing, learnersNext: [], autoLeave: votersOutgoing.length > 0 };
}

/** Nodes 1..n in, but those in `out`; connected and caught up unless said otherwise. */
function input(over: Partial<MetaGroupInput> & { n?: number; out?: number[]; gone?: number[]; down?: number[]; lag?: Record<number, [number, ProgressState]> }): MetaGroupInput {
  const n = over.n ?? 4;
  const ids = Array.from({ length: n }, (_, i) => i + 1).filter((id) => !(over.gone ?? []).includes(id));
  const nodes = ids.map((id) => ({ id, state: ((over.out ?? []).includes(id) ? 'out' : 'in') as NodeState }));
  const self = over.self ?? 1;
  const c = over.conf ?? conf([1, 2, 3]);
  const everyone = Array.from({ length: Math.max(n, ...c.voters) }, (_, i) => i + 1);
  const connected = new Set(everyone.filter((id) => id !== self && !(over.down ?? []).includes(id)));
  const progress = new Map<number, { match: number; state: ProgressState }>();
  for (const v of c.voters) if (v !== self) progress.set(v, { match: 100, state: (over.down ?? []).includes(v) ? 'probe' : 'replicate' });
  for (const [id, [match, state]] of Object.entries(over.lag ?? {})) progress.set(Number(id), { match, state });
  return { self, conf: c, changePending: false, nodes, connected, progress, commitIndex: 100, votersWanted: 3, ...over };
}

test('quorums', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(quorumOf), [1, 2, 2, 3, 3]);
  assert.ok(sameConfState(conf([3, 1]), conf([1, 3])));
  assert.ok(!sameConfState(conf([1, 2]), conf([1, 2], [1, 2, 3])));
});

test('the group grows to the wanted count, lowest connected in nodes first, never through two voters', () => {
  // From one voter, two join in one change: a group of two stops when either node does.
  assert.deepEqual(planMetaGroup(input({ conf: conf([1]) })), { kind: 'addVoters', nodeIds: [2, 3] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1]), down: [2] })), { kind: 'addVoters', nodeIds: [3, 4] });
  // With one node to add, the single voter waits for a second (a two-node cluster keeps one).
  const alone = planMetaGroup(input({ n: 2, conf: conf([1]) }));
  assert.equal(alone.kind, 'wait');
  assert.match((alone as { reason: string }).reason, /node 2 joins the metadata group with a second node/);
  assert.equal(planMetaGroup(input({ conf: conf([1]), down: [3, 4] })).kind, 'wait');
  // A group of two (grown before this rule) takes one more.
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]) })), { kind: 'addVoters', nodeIds: [3] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]), down: [3] })), { kind: 'addVoters', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]), out: [3] })), { kind: 'addVoters', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3]) })), { kind: 'none' });
  assert.deepEqual(planMetaGroup(input({ n: 2, conf: conf([1, 2]) })), { kind: 'none' }, 'no node to add');
});

test('nothing is decided while a change is in flight', () => {
  assert.equal(planMetaGroup(input({ conf: conf([1, 2]), changePending: true })).kind, 'wait');
  assert.equal(planMetaGroup(input({ conf: conf([1, 2, 4], [1, 2, 3]), out: [3] })).kind, 'wait');
});

test('a voter marked out is replaced: the replacement joins first, then the out voter leaves', () => {
  // 1, 2, 3 voters, 3 out, 4 in and connected.
  assert.deepEqual(planMetaGroup(input({ out: [3] })), { kind: 'addVoters', nodeIds: [4] });
  // Once 4 is a voter, 3 leaves (even while 4 still catches up: 1 and 2 make the quorum of 1, 2, 4).
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [3] })), { kind: 'removeVoter', nodeId: 3 });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [3], lag: { 4: [0, 'snapshot'] } })), { kind: 'removeVoter', nodeId: 3 });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 4]), out: [3] })), { kind: 'none' });
});

test('a voter gone from the map is replaced the same way', () => {
  assert.deepEqual(planMetaGroup(input({ gone: [3] })), { kind: 'addVoters', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), gone: [3], down: [3] })), { kind: 'removeVoter', nodeId: 3 });
});

test('without a replacement, an out voter stays (it still counts for the quorum)', () => {
  assert.deepEqual(planMetaGroup(input({ n: 3, out: [3] })), { kind: 'none' });
  assert.deepEqual(planMetaGroup(input({ out: [3], down: [4] })), { kind: 'none' });
});

test('unreachable out voters leave first, and no removal costs the quorum', () => {
  // 1..5 voters, 4 and 5 out, 5 down: 5 goes first.
  const five = { n: 5, conf: conf([1, 2, 3, 4, 5]), out: [4, 5] };
  assert.deepEqual(planMetaGroup(input({ ...five, down: [5] })), { kind: 'removeVoter', nodeId: 5 });
  assert.deepEqual(planMetaGroup(input({ ...five })), { kind: 'removeVoter', nodeId: 4 });
  // 1, 2, 3, 4 voters, 4 out, 2 and 3 down: removing 4 leaves 1 of 1, 2, 3 healthy, quorum 2.
  const step = planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [4], down: [2, 3] }));
  assert.equal(step.kind, 'wait');
  assert.match((step as { reason: string }).reason, /a quorum needs 2/);
});

test('a leader that leaves hands its leadership to the most caught-up voter that stays', () => {
  const step = planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [1], lag: { 2: [90, 'replicate'], 3: [100, 'replicate'] } }));
  assert.deepEqual(step, { kind: 'transferLeader', to: 3 });
  // Not to an unreachable one.
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [1], down: [3] })), { kind: 'transferLeader', to: 2 });
});

test('checkMetaRemoval (node remove): the only voter, a lost quorum, a leader', () => {
  const base = { self: 1, changePending: false, connected: new Set([2, 3]), commitIndex: 100 };
  const pr = (ids: number[]): Map<number, { match: number; state: ProgressState }> => new Map(ids.map((id) => [id, { match: 100, state: 'replicate' as ProgressState }]));
  assert.deepEqual(checkMetaRemoval({ ...base, conf: conf([1, 2, 3]), progress: pr([2, 3]) }, 4), { ok: true }, 'not a voter');
  assert.deepEqual(checkMetaRemoval({ ...base, conf: conf([1, 2, 3]), progress: pr([2, 3]) }, 3), { ok: true });
  const only = checkMetaRemoval({ ...base, conf: conf([1]), progress: pr([]) }, 1);
  assert.equal(only.ok, false);
  assert.match((only as { reason: string }).reason, /only voter/);
  // 1, 2, 3: removing 3 while 2 is down leaves 1 healthy of 1, 2 (quorum 2).
  const lost = checkMetaRemoval({ ...base, connected: new Set([3]), conf: conf([1, 2, 3]), progress: pr([3]) }, 3);
  assert.equal(lost.ok, false);
  assert.equal((lost as { transferTo?: number }).transferTo, undefined);
  // The leader itself: hand over first.
  const lead = checkMetaRemoval({ ...base, conf: conf([1, 2, 3]), progress: pr([2, 3]) }, 1);
  assert.equal(lead.ok, false);
  assert.equal((lead as { transferTo?: number }).transferTo, 2);
  // A dead voter of two: the leader alone is the quorum of one.
  assert.deepEqual(checkMetaRemoval({ ...base, connected: new Set(), conf: conf([1, 2]), progress: pr([]) }, 2), { ok: true });
});
