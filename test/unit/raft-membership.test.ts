import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { InvalidArgument, Unavailable } from '../../src/common/errors.js';
import { applyConfChange } from '../../src/raft/confchange.js';
import { emptyConfState } from '../../src/raft/storage.js';

function settle(h: Harness, ticks = 3): void {
  h.deliverAll();
  for (let i = 0; i < ticks; i++) {
    h.tickAll();
    h.deliverAll();
  }
}

test('a new learner catches up from a snapshot, never campaigns, and is promoted through a joint configuration', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.add(4);
  h.raft(1).proposeConfChange({ changes: [{ type: 'addLearner', nodeId: 4 }] });
  settle(h);
  for (const id of [1, 2, 3, 4]) {
    const cs = h.raft(id).status().confState;
    assert.deepEqual(cs.voters, [1, 2, 3], `node ${id}`);
    assert.deepEqual(cs.learners, [4], `node ${id}`);
    assert.deepEqual(cs.votersOutgoing, [], `node ${id} left the joint configuration`);
  }
  assert.equal(h.raft(4).log.lastIndex(), h.raft(1).log.lastIndex(), 'learner replicated');
  h.isolate(1);
  h.tick(4, 50);
  h.deliverAll();
  assert.equal(h.raft(4).currentRole, 'follower', 'a learner never campaigns');
  h.heal();
  settle(h);
  h.raft(1).proposeConfChange({ changes: [{ type: 'addVoter', nodeId: 4 }] });
  settle(h);
  for (const id of [1, 2, 3, 4]) assert.deepEqual(h.raft(id).status().confState.voters, [1, 2, 3, 4]);
});

test('in a joint configuration a commit needs a majority of both halves', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.add(4);
  h.add(5);
  h.raft(1).proposeConfChange({ changes: [{ type: 'addLearner', nodeId: 4 }, { type: 'addLearner', nodeId: 5 }] });
  settle(h);
  // Replace 2 and 3 by 4 and 5 in one joint change; keep 4 and 5 cut off.
  h.cutLink(1, 4);
  h.cutLink(1, 5);
  h.raft(1).proposeConfChange({
    changes: [
      { type: 'addVoter', nodeId: 4 },
      { type: 'addVoter', nodeId: 5 },
      { type: 'removeNode', nodeId: 2 },
      { type: 'removeNode', nodeId: 3 },
    ],
  });
  const jointIndex = h.raft(1).log.lastIndex();
  settle(h);
  // The joint configuration is in force as soon as its entry is in the log: even that entry
  // needs a majority of both halves.
  const cs = h.raft(1).status().confState;
  assert.deepEqual(cs.voters, [1, 4, 5]);
  assert.deepEqual(cs.votersOutgoing, [1, 2, 3]);
  assert.ok(h.raft(1).committed < jointIndex, 'the joint entry waits for the incoming half');
  const ref = h.proposeString(1, 'needs-both');
  settle(h);
  assert.ok(h.raft(1).committed < ref.index, '2 and 3 acknowledged, but the incoming half has only 1');
  assert.throws(() => h.raft(1).proposeConfChange({ changes: [{ type: 'addVoter', nodeId: 2 }] }), Unavailable);
  h.heal();
  settle(h, 5);
  assert.ok(h.raft(1).committed >= ref.index);
  assert.deepEqual(h.raft(1).status().confState.votersOutgoing, [], 'left automatically');
  assert.deepEqual(h.raft(4).status().confState.voters, [1, 4, 5]);
});

test('a leader that removes itself steps down and hands over to a caught-up voter', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.raft(1).proposeConfChange({ changes: [{ type: 'removeNode', nodeId: 1 }] });
  h.deliverAll();
  h.tickAll();
  h.deliverAll();
  assert.notEqual(h.raft(1).currentRole, 'leader');
  const leaders = [2, 3].filter((id) => h.raft(id).currentRole === 'leader');
  assert.equal(leaders.length, 1, 'a new leader at once (TimeoutNow), no election timeout wait');
  assert.deepEqual(h.raft(leaders[0]).status().confState.voters, [2, 3]);
  const ref = h.proposeString(leaders[0], 'x');
  settle(h);
  assert.equal(h.raft(leaders[0]).committed, ref.index);
});

test('leadership transfer: immediate to a caught-up voter, after catch-up to a lagging one; proposals refused meanwhile', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.raft(1).transferLeader(2);
  h.deliverAll();
  assert.equal(h.raft(2).currentRole, 'leader');
  assert.equal(h.raft(1).currentRole, 'follower');
  assert.equal(h.raft(2).currentTerm, 3);

  h.cutLink(2, 3);
  for (let i = 0; i < 5; i++) h.proposeString(2, `v${i}`);
  h.deliverAll();
  h.raft(2).transferLeader(3);
  assert.throws(() => h.proposeString(2, 'blocked'), Unavailable);
  h.heal();
  h.tickAll();
  h.deliverAll();
  assert.equal(h.raft(3).currentRole, 'leader');
  assert.equal(h.raft(3).log.lastIndex(), h.raft(2).log.lastIndex());
  assert.throws(() => h.raft(3).transferLeader(9), InvalidArgument);
});

test('conf change rules: joint changes are not nested, a leave needs a joint configuration, at least one voter', () => {
  const cs = emptyConfState();
  cs.voters = [1, 2, 3];
  const joint = applyConfChange(cs, { changes: [{ type: 'addLearner', nodeId: 3 }] });
  assert.deepEqual(joint.voters, [1, 2]);
  assert.deepEqual(joint.votersOutgoing, [1, 2, 3]);
  assert.deepEqual(joint.learnersNext, [3], 'an outgoing voter becomes a learner only when leaving');
  const left = applyConfChange(joint, { changes: [] });
  assert.deepEqual(left.learners, [3]);
  assert.deepEqual(left.votersOutgoing, []);
  const h = new Harness([1]);
  h.elect(1);
  assert.throws(() => h.raft(1).proposeConfChange({ changes: [] }), InvalidArgument);
  assert.throws(() => h.raft(1).proposeConfChange({ changes: [{ type: 'removeNode', nodeId: 1 }] }), InvalidArgument);
});

test('a node whose log removes it does not campaign, even before it has applied the change', () => {
  const h = new Harness([1, 2, 3, 4, 5]);
  h.elect(1);
  h.node(4).holdPersist = true; // 4 appends but neither persists, acknowledges nor applies
  h.raft(1).proposeConfChange({ changes: [{ type: 'removeNode', nodeId: 4 }, { type: 'removeNode', nodeId: 5 }] });
  settle(h, 4);
  assert.deepEqual(h.raft(1).status().confState.voters, [1, 2, 3]);
  assert.deepEqual(h.raft(1).status().confState.votersOutgoing, [], 'joint left');
  const r4 = h.raft(4);
  assert.ok(r4.log.applied < r4.log.lastIndex(), 'node 4 has not applied the change');
  assert.deepEqual(r4.status().confState.voters, [1, 2, 3], 'but its log already says it is out');
  const term = r4.currentTerm;
  r4.campaign();
  assert.equal(r4.currentRole, 'follower');
  assert.equal(r4.currentTerm, term);
  // Its applied-index view ({1..5}) would have let it win with votes from 4 and 5 plus one more.
  assert.deepEqual(r4.confStateAt(r4.log.applied).voters, [1, 2, 3, 4, 5]);
});

test('a voter added directly counts as recently active, so the next check-quorum round does not depose the leader before it can answer', () => {
  const h = new Harness([1]);
  h.elect(1);
  const r = h.raft(1);
  const drain = (): void => {
    while (r.hasReady()) {
      const rd = r.ready();
      h.node(1).storage.append(rd.entries);
      if (rd.hardState) h.node(1).storage.setHardState(rd.hardState);
      r.advance(rd);
    }
  };
  drain();
  // Run the leader up to one tick before its check-quorum round, then add a voter nobody runs yet.
  for (let i = 0; i < 9; i++) {
    r.tick();
    drain();
  }
  r.proposeConfChange({ changes: [{ type: 'addVoter', nodeId: 2 }] });
  drain();
  r.tick();
  drain();
  assert.equal(r.currentRole, 'leader', 'deposed by a check-quorum round that counted the new voter down');
});
