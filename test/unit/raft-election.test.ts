import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { RaftNode } from '../../src/raft/node.js';
import { MemoryStorage } from '../../src/raft/storage.js';
import { SeededRng } from '../../src/raft/rng.js';
import { defaultConfig } from '../../src/raft/types.js';
import { AssertionFailed } from '../../src/common/errors.js';

test('a campaign with pre-vote elects a leader that commits a no-op of its term', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  assert.deepEqual(h.takeTrace(), [
    '1->2 preVote t2 last=1/t1',
    '1->3 preVote t2 last=1/t1',
    '2->1 preVoteResp t2 grant',
    '3->1 preVoteResp t2 grant',
    '1->2 vote t2 last=1/t1',
    '1->3 vote t2 last=1/t1',
    '2->1 voteResp t2 grant',
    '3->1 voteResp t2 grant',
    '1->2 app t2 prev=1/t1 ents=2..2 commit=1',
    '1->3 app t2 prev=1/t1 ents=2..2 commit=1',
    '2->1 appResp t2 ok 2',
    '3->1 appResp t2 ok 2',
    '1->2 app t2 prev=2/t2 ents=- commit=2',
    '1->3 app t2 prev=2/t2 ents=- commit=2',
    '2->1 appResp t2 ok 2',
    '3->1 appResp t2 ok 2',
  ]);
  for (const id of [1, 2, 3]) {
    assert.equal(h.raft(id).leader, 1);
    assert.equal(h.raft(id).committed, 2);
  }
  assert.equal(h.raft(1).currentRole, 'leader');
});

test('a node times out into an election on its own after a randomized election timeout', () => {
  const h = new Harness([1, 2, 3]);
  let ticks = 0;
  while (!Array.from(h.nodes.values()).some((n) => n.raft.currentRole === 'leader')) {
    h.tickAll();
    h.deliverAll();
    ticks++;
    assert.ok(ticks < 40, 'no leader within 2 election timeouts');
  }
  assert.ok(ticks >= 10, `elected after ${ticks} ticks, before the minimum election timeout`);
});

test('a voter refuses a candidate whose log is less up to date', () => {
  const h = new Harness([1, 2, 3], { checkQuorum: false, leaseTicks: 0 });
  h.elect(1);
  h.cutLink(1, 3);
  h.proposeString(1, 'a');
  h.deliverAll(); // 1 and 2 hold index 3, 3 does not
  h.heal();
  h.isolate(1);
  h.takeTrace();
  h.raft(3).campaign();
  h.deliverAll();
  assert.deepEqual(h.takeTrace(), ['3->2 preVote t3 last=2/t2', '2->3 preVoteResp t2 REJECT']);
  assert.notEqual(h.raft(3).currentRole, 'leader');
  assert.equal(h.raft(3).currentTerm, 2, 'a failed pre-vote leaves the term alone');
  h.raft(2).campaign();
  h.deliverAll();
  assert.equal(h.raft(2).currentRole, 'leader', 'the more up-to-date node wins');
});

test('without pre-vote, a candidate whose log is too short to win does not hold back the elections of up-to-date voters', () => {
  // Node 3 misses an entry, then the leader goes. Node 3 campaigns every half election timeout
  // (as several stale nodes with short timeouts do between them), each time at a newer term
  // that node 2 adopts while refusing the vote. Had adopting the term restarted node 2's
  // election clock, node 2 would never time out and no leader would ever be elected again.
  const h = new Harness([1, 2, 3], { preVote: false, checkQuorum: false, leaseTicks: 0 });
  h.elect(1);
  h.cutLink(1, 3);
  h.proposeString(1, 'a');
  h.deliverAll();
  h.heal();
  h.isolate(1);
  const termBefore = h.raft(2).currentTerm;
  let ticks = 0;
  while (h.raft(2).currentRole !== 'leader') {
    if (ticks % 5 === 0 && h.raft(3).currentRole !== 'leader') h.raft(3).campaign();
    h.deliverAll();
    h.tick(2);
    h.tick(3);
    h.deliverAll();
    ticks++;
    assert.ok(ticks <= 40, `node 2 not elected within 2 election timeouts (term ${h.raft(2).currentTerm})`);
  }
  assert.ok(h.raft(2).currentTerm > termBefore + 1, 'node 3 did campaign at newer terms meanwhile');
  assert.equal(h.raft(3).leader, 2);
});

test('pre-vote: a partitioned node does not inflate its term nor disrupt the leader when it returns', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.isolate(3);
  for (let i = 0; i < 100; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.equal(h.raft(3).currentTerm, 2, 'pre-vote kept the isolated node at the cluster term');
  h.heal();
  for (let i = 0; i < 5; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.equal(h.raft(1).currentRole, 'leader');
  assert.equal(h.raft(1).currentTerm, 2);
  assert.equal(h.raft(3).leader, 1);
});

test('without pre-vote the same partition forces a new election (what pre-vote prevents)', () => {
  const h = new Harness([1, 2, 3], { preVote: false, checkQuorum: false, leaseTicks: 0 });
  h.elect(1);
  h.isolate(3);
  for (let i = 0; i < 100; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.ok(h.raft(3).currentTerm > 2);
  h.heal();
  for (let i = 0; i < 40; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.ok(h.raft(1).currentTerm > 2, 'the leader was deposed by the returning node');
});

test('check-quorum: a leader that hears from no quorum steps down within an election timeout', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.isolate(1);
  let steps = 0;
  while (h.raft(1).currentRole === 'leader') {
    h.tick(1);
    h.deliverAll();
    steps++;
    assert.ok(steps <= 20, 'isolated leader did not step down');
  }
  assert.equal(h.raft(1).currentRole, 'follower');
  assert.equal(h.raft(1).leaseValid(), false);
});

test('leader stickiness: a follower that heard from its leader recently ignores other candidates', () => {
  const h = new Harness([1, 2, 3], { preVote: false });
  h.elect(1);
  h.isolate(1);
  h.tick(3, 3); // well within the election timeout since 1 was heard
  h.raft(2).campaign(); // 2 forces a real vote at term 3
  h.deliverAll();
  const t = h.takeTrace();
  assert.ok(t.includes('2->3 vote t3 last=2/t2'));
  assert.ok(!t.some((l) => l.startsWith('3->2 voteResp')), '3 must ignore the vote request');
  assert.equal(h.raft(3).currentTerm, 2);
  assert.equal(h.raft(2).currentRole, 'candidate');
});

test('a restarted node refuses votes for one election timeout (it may have granted a lease)', () => {
  const h = new Harness([1, 2, 3], { preVote: false });
  h.elect(1);
  h.restart(3);
  h.isolate(1);
  h.tick(2, 30);
  h.raft(2).campaign();
  h.deliverAll();
  assert.notEqual(h.raft(2).currentRole, 'leader');
  h.tick(3, 10);
  h.raft(2).campaign();
  h.deliverAll();
  assert.equal(h.raft(2).currentRole, 'leader');
});

test('a single-voter group elects itself and commits without any message', () => {
  const h = new Harness([1]);
  h.elect(1);
  assert.equal(h.raft(1).currentRole, 'leader');
  const ref = h.proposeString(1, 'x');
  h.deliverAll();
  assert.equal(h.raft(1).committed, ref.index);
  assert.deepEqual(h.takeTrace(), []);
});

test('at most one vote per term survives a restart', () => {
  const h = new Harness([1, 2, 3], { preVote: false, checkQuorum: false, leaseTicks: 0 });
  h.isolate(1);
  h.raft(2).campaign();
  h.deliverAll(); // 3 votes for 2 in term 2
  assert.equal(h.raft(2).currentRole, 'leader');
  h.restart(3, { preVote: false, checkQuorum: false, leaseTicks: 0 });
  assert.equal(h.node(3).storage.hardState.vote, 2);
  h.heal();
  h.isolate(2);
  // 1 is still at term 1; its campaign is for term 2 where 3 already voted.
  h.raft(1).campaign();
  h.deliverAll();
  assert.equal(h.raft(1).currentTerm, 2);
  assert.notEqual(h.raft(1).currentRole, 'leader');
});

test('configuration limits are asserted', () => {
  const rng = new SeededRng(1);
  const bad = [
    { leaseTicks: 9, maxClockDriftTicks: 2 },
    { heartbeatTicks: 10 },
    { maxInflightMsgs: 0 },
    { leaseTicks: 5, checkQuorum: false },
    { maxSnapshotChunkBytes: 0 },
  ];
  for (const b of bad) {
    assert.throws(() => new RaftNode({ ...defaultConfig(1, rng), ...b }, new MemoryStorage([1])), AssertionFailed, JSON.stringify(b));
  }
});
