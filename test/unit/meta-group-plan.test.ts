/**
 * Group 0's next membership step (src/cluster/meta-group-plan.ts): grow to the wanted voters,
 * replace a voter marked out or gone from the map (replacement first, then removal), one
 * change at a time, never at the cost of the quorum, a newcomer a learner until caught up, and
 * a leader that leaves hands over first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkMetaRemoval, DomainIndex, metaVotersWanted, planMetaGroup, quorumOf, sameConfState, spreadOf, widensInPlaceOfAVoter, type MetaGroupInput } from '../../src/cluster/meta-group-plan.js';
import type { ConfState, ProgressState } from '../../src/raft/index.js';
import type { NodeState } from '../../src/cluster/map.js';

function conf(voters: number[], votersOutgoing: number[] = [], learners: number[] = []): ConfState {
  return { voters, learners, votersOutgoing, learnersNext: [], autoLeave: votersOutgoing.length > 0 };
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
  for (const v of [...c.voters, ...c.learners]) if (v !== self) progress.set(v, { match: 100, state: (over.down ?? []).includes(v) ? 'probe' : 'replicate' });
  for (const [id, [match, state]] of Object.entries(over.lag ?? {})) progress.set(Number(id), { match, state });
  return { self, conf: c, changePending: false, nodes, connected, progress, commitIndex: 100, votersWanted: 3, ...over };
}

test('quorums', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(quorumOf), [1, 2, 2, 3, 3]);
  assert.ok(sameConfState(conf([3, 1]), conf([1, 3])));
  assert.ok(!sameConfState(conf([1, 2]), conf([1, 2], [1, 2, 3])));
});

test('the group grows to the wanted count, lowest connected in nodes first, never through two voters', () => {
  // From one voter, two join in one change: a group of two stops when either node does. They
  // join as learners, and become voters together once both are caught up.
  assert.deepEqual(planMetaGroup(input({ conf: conf([1]) })), { kind: 'addLearners', nodeIds: [2, 3] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1], [], [2, 3]) })), { kind: 'addVoters', nodeIds: [2, 3] });
  const lagging = planMetaGroup(input({ conf: conf([1], [], [2, 3]), lag: { 3: [40, 'replicate'] } }));
  assert.equal(lagging.kind, 'wait');
  assert.match((lagging as { reason: string }).reason, /node 3 catches up as a learner/);
  assert.deepEqual(planMetaGroup(input({ conf: conf([1]), down: [2] })), { kind: 'addLearners', nodeIds: [3, 4] });
  // With one node to add, the single voter waits for a second (a two-node cluster keeps one).
  const alone = planMetaGroup(input({ n: 2, conf: conf([1]) }));
  assert.equal(alone.kind, 'wait');
  assert.match((alone as { reason: string }).reason, /node 2 joins the metadata group with a second node/);
  assert.equal(planMetaGroup(input({ conf: conf([1]), down: [3, 4] })).kind, 'wait');
  // A group of two (grown before this rule) takes one more.
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]) })), { kind: 'addLearners', nodeIds: [3] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]), down: [3] })), { kind: 'addLearners', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2]), out: [3] })), { kind: 'addLearners', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3]) })), { kind: 'none' });
  // Two voters and no third node (a three-node cluster after a node remove): the one that does
  // not lead leaves; a leader that is the other one hands over first.
  assert.deepEqual(planMetaGroup(input({ n: 2, conf: conf([1, 2]) })), { kind: 'removeVoter', nodeId: 2 });
  assert.deepEqual(planMetaGroup(input({ n: 2, conf: conf([1, 2]), self: 2 })), { kind: 'removeVoter', nodeId: 1 });
  assert.deepEqual(planMetaGroup(input({ n: 2, conf: conf([1, 2]), down: [2] })), { kind: 'removeVoter', nodeId: 2 }, 'an unreachable second voter too');
  assert.deepEqual(planMetaGroup(input({ n: 3, conf: conf([1, 2]), down: [3] })), { kind: 'removeVoter', nodeId: 2 }, 'a third node not connected is not in sight');
  assert.deepEqual(planMetaGroup(input({ n: 1, conf: conf([1]) })), { kind: 'none' });
});

test('nothing is decided while a change is in flight', () => {
  assert.equal(planMetaGroup(input({ conf: conf([1, 2]), changePending: true })).kind, 'wait');
  assert.equal(planMetaGroup(input({ conf: conf([1, 2, 4], [1, 2, 3]), out: [3] })).kind, 'wait');
});

test('a voter marked out is replaced: the replacement joins first, then the out voter leaves', () => {
  // 1, 2, 3 voters, 3 out, 4 in and connected: 4 joins as a learner, and becomes a voter only
  // once caught up (a voter still fetching the map would be one of the three votes 1, 2, 3, 4
  // need while 3 is dead).
  assert.deepEqual(planMetaGroup(input({ out: [3] })), { kind: 'addLearners', nodeIds: [4] });
  const catchingUp = planMetaGroup(input({ conf: conf([1, 2, 3], [], [4]), out: [3], lag: { 4: [0, 'snapshot'] } }));
  assert.equal(catchingUp.kind, 'wait');
  assert.match((catchingUp as { reason: string }).reason, /node 4 catches up as a learner/);
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3], [], [4]), out: [3] })), { kind: 'addVoters', nodeIds: [4] });
  // Once 4 is a voter, 3 leaves (even while 4 still catches up: 1 and 2 make the quorum of 1, 2, 4).
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [3] })), { kind: 'removeVoter', nodeId: 3 });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 3, 4]), out: [3], lag: { 4: [0, 'snapshot'] } })), { kind: 'removeVoter', nodeId: 3 });
  assert.deepEqual(planMetaGroup(input({ conf: conf([1, 2, 4]), out: [3] })), { kind: 'none' });
});

test('a voter gone from the map is replaced the same way', () => {
  assert.deepEqual(planMetaGroup(input({ gone: [3] })), { kind: 'addLearners', nodeIds: [4] });
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

test('checkMetaRemoval: a leader elected less than an election timeout ago gives no settled quorum verdict', () => {
  const base = { self: 1, changePending: false, connected: new Set([3]), commitIndex: 100, conf: conf([1, 2, 3]) };
  // Node 2 still reads as a probe to a fresh leader: removing 3 looks like it costs the quorum.
  const progress = new Map<number, { match: number; state: ProgressState }>([
    [2, { match: 0, state: 'probe' }],
    [3, { match: 100, state: 'replicate' }],
  ]);
  const verdict = (ticksLed: number): ReturnType<typeof checkMetaRemoval> => checkMetaRemoval({ ...base, progress, leaderAge: { ticksLed, electionTicks: 10 } }, 3);
  for (const ticksLed of [0, 9]) {
    const v = verdict(ticksLed);
    assert.equal(v.ok, false);
    assert.equal((v as { settled?: boolean }).settled, false, `${ticksLed} ticks`);
    assert.match((v as { reason: string }).reason, new RegExp(`a quorum needs 2 \\(as this node sees it ${ticksLed} ticks after it was elected\\)$`));
  }
  for (const ticksLed of [10, 500, -1]) assert.equal((verdict(ticksLed) as { settled?: boolean }).settled, true, `${ticksLed} ticks`);
  assert.equal((checkMetaRemoval({ ...base, progress }, 3) as { settled?: boolean }).settled, true, 'no age given');
  // A verdict that is no quorum question is not affected: the only voter stays settled.
  const only = checkMetaRemoval({ ...base, conf: conf([1]), progress, leaderAge: { ticksLed: 0, electionTicks: 10 } }, 1);
  assert.equal((only as { settled?: boolean }).settled, true);
  // Nor is an answer that allows the removal.
  assert.deepEqual(checkMetaRemoval({ ...base, connected: new Set([2, 3]), progress: new Map([...progress, [2, { match: 100, state: 'replicate' }]]), leaderAge: { ticksLed: 0, electionTicks: 10 } }, 3), { ok: true });
});

/** Nodes with labels zone/rack/host from `where` (id → "zone/rack"), all in, connected, caught up. */
function spreadInput(where: Record<number, string>, voters: number[], over: Partial<MetaGroupInput> = {}): MetaGroupInput {
  const nodes = Object.entries(where).map(([id, zr]) => {
    const [zone, rack] = zr.split('/');
    return { id: Number(id), state: 'in' as NodeState, labels: { zone, rack: rack ?? 'r', host: `h${id}` } };
  });
  const self = over.self ?? voters[0];
  const learners = over.conf?.learners ?? [];
  const progress = new Map([...voters, ...learners].filter((v) => v !== self).map((v) => [v, { match: 100, state: 'replicate' as ProgressState }]));
  return {
    self,
    conf: conf(voters),
    changePending: false,
    nodes,
    connected: new Set(nodes.map((n) => n.id).filter((id) => id !== self)),
    progress,
    commitIndex: 100,
    votersWanted: metaVotersWanted(nodes.length),
    ...over,
  };
}

test('five voters from five nodes in, three below', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 100].map(metaVotersWanted), [3, 3, 3, 3, 5, 5, 5]);
  // Three voters of five nodes: two more join in one change.
  const five = { 1: 'a', 2: 'b', 3: 'c', 4: 'd', 5: 'e' };
  assert.deepEqual(planMetaGroup(spreadInput(five, [1, 2, 3])), { kind: 'addLearners', nodeIds: [4, 5] });
  // Down to four nodes in: one voter leaves (the highest id of equals), and not before the others are caught up.
  const four = spreadInput(five, [1, 2, 3, 4, 5], { nodes: spreadInput(five, []).nodes.map((n) => (n.id === 5 ? { ...n, state: 'out' as NodeState } : n)), votersWanted: 3 });
  assert.deepEqual(planMetaGroup(four), { kind: 'removeVoter', nodeId: 5 });
  assert.deepEqual(planMetaGroup({ ...four, conf: conf([1, 2, 3, 4]) }), { kind: 'removeVoter', nodeId: 4 });
});

test('the group grows onto the nodes that spread it over the most zones, then racks, then hosts', () => {
  const where = { 1: 'a/r1', 2: 'a/r1', 3: 'a/r2', 4: 'b/r1', 5: 'a/r1' };
  // 4 brings zone b, then 3 brings rack r2 (not 2 or 5: same rack as 1).
  assert.deepEqual(planMetaGroup(spreadInput(where, [1], { votersWanted: 3 })), { kind: 'addLearners', nodeIds: [4, 3] });
  const flat = { 1: 'a', 2: 'a', 3: 'a', 4: 'a' };
  assert.deepEqual(planMetaGroup(spreadInput(flat, [1])), { kind: 'addLearners', nodeIds: [2, 3] }, 'one zone and rack: lowest ids');
});

test('voters crowded in one zone move to other zones one at a time: a node joins, then a crowded voter leaves', () => {
  const where = { 1: 'a', 2: 'a', 3: 'a', 4: 'b' };
  assert.deepEqual(planMetaGroup(spreadInput(where, [1, 2, 3])), { kind: 'addLearners', nodeIds: [4] });
  assert.deepEqual(planMetaGroup(spreadInput(where, [1, 2, 3], { conf: conf([1, 2, 3], [], [4]) })), { kind: 'addVoters', nodeIds: [4] });
  // Not while a voter is unhealthy.
  assert.equal(planMetaGroup(spreadInput(where, [1, 2, 3], { connected: new Set([3, 4]) })).kind, 'none');
  // The newcomer catches up before a voter leaves; then the highest id of the crowded zone goes.
  const joined = spreadInput(where, [1, 2, 3, 4]);
  const lagging = planMetaGroup({ ...joined, progress: new Map([...joined.progress, [4, { match: 0, state: 'snapshot' as ProgressState }]]) });
  assert.equal(lagging.kind, 'wait');
  assert.match((lagging as { reason: string }).reason, /node 4 catches up before node 3 leaves/);
  assert.deepEqual(planMetaGroup(joined), { kind: 'removeVoter', nodeId: 3 });
  assert.deepEqual(planMetaGroup(spreadInput(where, [1, 2, 4])), { kind: 'none' }, 'as wide as these nodes allow');
  // The leader is not kept for leading: it hands over, and the next leader removes it.
  assert.deepEqual(planMetaGroup(spreadInput({ 1: 'a', 2: 'b', 3: 'c', 4: 'a' }, [1, 2, 3, 4], { self: 4, votersWanted: 3 })), { kind: 'transferLeader', to: 1 });
});

test('from any start, the plan ends with the wanted voters, spread as wide as the nodes allow', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 2 })), { minLength: 1, maxLength: 9 }),
      fc.integer({ min: 1, max: 9 }),
      (placement, firstVoter) => {
        const where: Record<number, string> = {};
        placement.forEach(([zone, rack], i) => (where[i + 1] = `z${zone}/r${rack}`));
        const n = placement.length;
        let voters = [Math.min(firstVoter, n)];
        let learners: number[] = [];
        let self = voters[0];
        const trace: string[] = [];
        for (let step = 0; step < 60; step++) {
          const input = spreadInput(where, voters, { self, conf: conf(voters, [], learners) });
          const next = planMetaGroup(input);
          trace.push(`${JSON.stringify(voters)} learners ${JSON.stringify(learners)} → ${JSON.stringify(next)}`);
          if (next.kind === 'addLearners') {
            assert.ok(next.nodeIds.every((id) => !voters.includes(id) && !learners.includes(id)), trace.join('\n'));
            learners = [...learners, ...next.nodeIds];
          } else if (next.kind === 'addVoters') {
            assert.ok(next.nodeIds.every((id) => learners.includes(id)), `a voter added without being a learner first:\n${trace.join('\n')}`);
            voters = [...voters, ...next.nodeIds];
            learners = learners.filter((l) => !next.nodeIds.includes(l));
          } else if (next.kind === 'removeVoter') voters = voters.filter((v) => v !== next.nodeId);
          else if (next.kind === 'removeLearner') learners = learners.filter((l) => l !== next.nodeId);
          else if (next.kind === 'transferLeader') self = next.to;
          else {
            assert.deepEqual(learners, [], `learners left over:\n${trace.join('\n')}`);
            const wanted = metaVotersWanted(n);
            const expected = n === 2 ? 1 : Math.min(wanted, n);
            assert.equal(voters.length, expected, trace.join('\n'));
            for (let c = 1; c <= n; c++) {
              if (!voters.includes(c)) assert.ok(!widensInPlaceOfAVoter(new DomainIndex(input.nodes), voters, c), `node ${c} would spread wider:\n${trace.join('\n')}`);
            }
            // As many zones as there are voters, or as the nodes offer.
            const zonesOffered = new Set(placement.map(([zone]) => zone)).size;
            assert.equal(spreadOf(new DomainIndex(input.nodes), voters)[0], Math.min(voters.length, zonesOffered), trace.join('\n'));
            return;
          }
          assert.notEqual(voters.length, 2, `group 0 ran on two voters:\n${trace.join('\n')}`);
        }
        assert.fail(`no end in 60 steps:\n${trace.join('\n')}`);
      },
    ),
    { numRuns: 300 },
  );
});

test('learners: one whose node is out or gone leaves first, one already joining is brought in before any other node, one nothing wants leaves', () => {
  // Learner 4 marked out, learner 5 gone from the map: each leaves (lowest first).
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [4, 5]), out: [4], gone: [5] })), { kind: 'removeLearner', nodeId: 4 });
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [5]), gone: [5] })), { kind: 'removeLearner', nodeId: 5 });
  // 3 out: learner 5 (already catching up) replaces it rather than a new learner 4.
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [5]), out: [3] })), { kind: 'addVoters', nodeIds: [5] });
  // An unreachable learner is passed over for a reachable node, and kept meanwhile.
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [5]), out: [3], down: [5] })), { kind: 'addLearners', nodeIds: [4] });
  // Three healthy voters and nothing to widen: a learner left over from an overtaken move leaves.
  assert.deepEqual(planMetaGroup(input({ n: 4, conf: conf([1, 2, 3], [], [4]) })), { kind: 'removeLearner', nodeId: 4 });
  // Promotion keeps the quorum rule: 1, 2, 3 voters with 2 and 3 down cannot take learner 4 (1 and 4 are 2 of the 3 that 4 voters need).
  const short = planMetaGroup(input({ n: 4, conf: conf([1, 2, 3], [], [4]), out: [3], down: [2, 3] }));
  assert.equal(short.kind, 'wait');
  assert.match((short as { reason: string }).reason, /needs 3 healthy voters/);
});

test('a learner that stalls is passed over: another node is brought in, then the stalled one leaves', () => {
  const stalled = new Set([4]);
  // 3 out; learner 4 never caught up (its catch-up outlasted the leader's limit): node 5 instead.
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [4]), out: [3], lag: { 4: [0, 'probe'] }, stalledLearners: stalled })), { kind: 'addLearners', nodeIds: [5] });
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [4, 5]), out: [3], lag: { 4: [0, 'probe'] }, stalledLearners: stalled })), { kind: 'addVoters', nodeIds: [5] });
  // 5 a voter, 3 gone: the stalled learner is not wanted any more.
  assert.deepEqual(planMetaGroup(input({ n: 5, conf: conf([1, 2, 5], [], [4]), gone: [3], lag: { 4: [0, 'probe'] }, stalledLearners: stalled })), { kind: 'removeLearner', nodeId: 4 });
  // Without the stall judged, the plan waits for it.
  assert.equal(planMetaGroup(input({ n: 5, conf: conf([1, 2, 3], [], [4]), out: [3], lag: { 4: [0, 'probe'] } })).kind, 'wait');
});
