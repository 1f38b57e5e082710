import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { NotLeader } from '../../src/common/errors.js';

test('ReadIndex: a read is answered at the commit index after a heartbeat round confirms leadership', () => {
  const h = new Harness([1, 2, 3], { leaseTicks: 0 });
  h.elect(1);
  h.takeTrace();
  h.raft(1).readIndex('r1');
  h.raft(1).readIndex('r2');
  h.processReadies();
  assert.deepEqual(h.node(1).readStates, [], 'nothing before the round');
  h.deliverAll();
  assert.deepEqual(h.takeTrace(), ['1->2 heartbeat t2 commit=2', '1->3 heartbeat t2 commit=2', '2->1 heartbeatResp t2', '3->1 heartbeatResp t2']);
  assert.deepEqual(h.node(1).readStates, [{ index: 2, ctx: 'r1' }, { index: 2, ctx: 'r2' }], 'one round serves both');
  assert.throws(() => h.raft(2).readIndex('x'), NotLeader);
});

test('ReadIndex waits until the new leader has committed an entry of its own term', () => {
  const h = new Harness([1, 2, 3], { leaseTicks: 0 });
  h.elect(1);
  h.proposeString(1, 'a');
  h.deliverAll();
  h.restart(1, { leaseTicks: 0 });
  h.tick(2, 10);
  h.tick(3, 10);
  h.filter = (m) => m.type !== 'app'; // the new leader's no-op cannot replicate
  h.elect(2);
  assert.equal(h.raft(2).currentRole, 'leader');
  h.raft(2).readIndex('r');
  for (let i = 0; i < 3; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.deepEqual(h.node(2).readStates, [], 'not before its own-term entry commits');
  h.filter = undefined;
  h.tickAll();
  h.deliverAll();
  h.tickAll();
  h.deliverAll();
  assert.equal(h.node(2).readStates.length, 1);
  assert.ok(h.node(2).readStates[0].index >= 4, 'read point covers every earlier commit');
});

test('an isolated leader never answers a ReadIndex read, and steps down', () => {
  const h = new Harness([1, 2, 3], { leaseTicks: 0 });
  h.elect(1);
  h.isolate(1);
  h.raft(1).readIndex('stale?');
  for (let i = 0; i < 25; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.deepEqual(h.node(1).readStates, []);
  assert.equal(h.raft(1).currentRole, 'follower');
});

test('lease: granted by a quorum of acknowledgements, serves reads without a round, lapses before anyone else can lead', () => {
  const h = new Harness([1, 2, 3], { leaseTicks: 6, maxClockDriftTicks: 3, electionTicks: 10 });
  h.raft(1).campaign();
  h.processReadies();
  assert.equal(h.raft(1).leaseValid(), false, 'no acknowledgement yet');
  h.deliverAll();
  assert.equal(h.raft(1).leaseValid(), true, 'the no-op round was acknowledged by a quorum');
  h.takeTrace();
  h.raft(1).readIndex('fast');
  h.deliverAll();
  assert.deepEqual(h.node(1).readStates, [{ index: 2, ctx: 'fast' }]);
  assert.deepEqual(h.takeTrace(), [], 'served without any message');

  h.isolate(1);
  let leaseLapsedAt = -1;
  let otherLeaderAt = -1;
  for (let t = 1; t <= 60 && otherLeaderAt < 0; t++) {
    h.tickAll();
    h.deliverAll();
    if (leaseLapsedAt < 0 && !h.raft(1).leaseValid()) leaseLapsedAt = t;
    if (h.raft(2).currentRole === 'leader' || h.raft(3).currentRole === 'leader') otherLeaderAt = t;
  }
  assert.ok(leaseLapsedAt > 0 && leaseLapsedAt <= 6, `lease lapsed after ${leaseLapsedAt} ticks`);
  assert.ok(otherLeaderAt > leaseLapsedAt, `another leader at ${otherLeaderAt}, lease lapsed at ${leaseLapsedAt}`);
});

test('lease: a leadership transfer voids the lease for the rest of the term', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.tickAll();
  h.deliverAll();
  assert.equal(h.raft(1).leaseValid(), true);
  h.filter = (m) => m.type !== 'timeoutNow';
  h.raft(1).transferLeader(2);
  h.deliverAll();
  assert.equal(h.raft(1).leaseValid(), false, 'transfer in progress');
  for (let i = 0; i < 12; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.equal(h.raft(1).status().leadTransferee, 0, 'transfer abandoned after an election timeout');
  assert.equal(h.raft(1).currentRole, 'leader');
  assert.equal(h.raft(1).leaseValid(), false, 'a TimeoutNow was sent: voters may have moved on');
});

test('the broken variant (readWithoutLeaseOrReadIndex) answers reads on an isolated leader', () => {
  const h = new Harness([1, 2, 3], { leaseTicks: 0, unsafe: { readWithoutLeaseOrReadIndex: true } });
  h.elect(1);
  h.isolate(1);
  h.raft(1).readIndex('stale');
  h.deliverAll();
  assert.deepEqual(h.node(1).readStates, [{ index: 2, ctx: 'stale' }]);
});
