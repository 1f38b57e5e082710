import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { NotLeader, Unavailable } from '../../src/common/errors.js';
import type { MsgApp } from '../../src/raft/types.js';

const simple = { preVote: false, checkQuorum: false, leaseTicks: 0 };

function logTerms(h: Harness, id: number): number[] {
  const r = h.raft(id);
  const out: number[] = [];
  for (let i = r.log.firstIndex(); i <= r.log.lastIndex(); i++) out.push(r.log.term(i)!);
  return out;
}

test('proposals between two Ready batches travel in one MsgApp per follower', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.takeTrace();
  for (let i = 0; i < 5; i++) h.proposeString(1, `v${i}`);
  h.deliverAll();
  const apps = h.takeTrace().filter((l) => l.includes(' app ') && !l.includes('ents=-'));
  assert.deepEqual(apps, ['1->2 app t2 prev=2/t2 ents=3..7 commit=2', '1->3 app t2 prev=2/t2 ents=3..7 commit=2']);
  assert.equal(h.raft(2).committed, 7);
});

test('a follower with conflicting uncommitted entries is truncated, with one rejection thanks to the term hint', () => {
  const h = new Harness([1, 2, 3], simple);
  h.elect(1);
  for (let i = 0; i < 5; i++) h.proposeString(1, `common${i}`);
  h.deliverAll(); // indexes 3..7 committed everywhere
  h.isolate(1);
  for (let i = 0; i < 20; i++) h.proposeString(1, `lost${i}`); // 8..27, term 2, never committed
  h.deliverAll();
  h.elect(2); // term 3 with 3's vote
  for (let i = 0; i < 30; i++) h.proposeString(2, `kept${i}`);
  h.deliverAll();
  h.restart(2, simple); // forget follower progress: the next leader probes at its last index
  h.elect(2);
  assert.equal(h.raft(2).currentRole, 'leader');
  h.heal();
  h.takeTrace();
  h.tickAll(); // heartbeat: 1 learns the new term and is probed
  h.deliverAll();
  const rejects = h.takeTrace().filter((l) => l.startsWith('1->2 appResp') && l.includes('REJECT'));
  assert.deepEqual(rejects, ['1->2 appResp t4 REJECT 38 hint=27/t2'], 'one round trip instead of one per entry');
  assert.deepEqual(logTerms(h, 1), logTerms(h, 2));
  assert.equal(h.raft(1).committed, h.raft(2).committed);
  assert.ok(!h.node(1).applied.some((e) => new TextDecoder().decode(e.data).startsWith('lost')));
});

test('Figure 8: an entry of an earlier term is not committed by counting replicas', () => {
  for (const unsafe of [false, true]) {
    const h = new Harness([1, 2, 3], { ...simple, maxEntriesPerMsg: 1, unsafe: { commitPreviousTermByCounting: unsafe } });
    h.elect(1); // term 2, commit 2
    h.isolate(1);
    h.proposeString(1, 'old'); // index 3, term 2, only on node 1
    h.deliverAll();
    h.heal();
    h.restart(1, { ...simple, maxEntriesPerMsg: 1, unsafe: { commitPreviousTermByCounting: unsafe } });
    // Hold back the no-op (index 4) from followers that could accept it: they only get index 3.
    h.filter = (m) => !(m.type === 'app' && (m as MsgApp).entries.some((e) => e.index >= 4) && h.raft(m.to).log.lastIndex() >= 3);
    h.elect(1); // term 3: 1 is the most up to date
    assert.equal(h.raft(1).currentTerm, 3);
    assert.equal(h.raft(2).log.lastIndex(), 3);
    assert.equal(h.raft(1).committed, unsafe ? 3 : 2, unsafe ? 'the broken variant commits by counting' : 'index 3 is on a quorum but of term 2');
    h.filter = undefined;
    h.tickAll();
    h.deliverAll();
    assert.equal(h.raft(1).committed, 4, 'committing the no-op commits index 3 with it');
  }
});

/**
 * Three voters, node 1 leading, node 3 cut off; one entry proposed whose Ready the leader's
 * host has written and sent (follower 2 has it and acknowledged it) but whose persistence it
 * has not reported yet: `finish()` does, then delivers what follows.
 */
function leaderAppendInFlight(): { h: Harness; index: number; finish: () => void } {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  h.cutLink(1, 3);
  const leader = h.node(1);
  leader.holdPersist = true;
  const ref = h.proposeString(1, 'x');
  h.processReadies();
  const rd = leader.held!;
  leader.held = undefined;
  assert.equal(rd.entries.length, 1);
  leader.storage.append(rd.entries);
  h.queue.push(...rd.messages);
  h.deliverAll();
  assert.equal(h.raft(2).log.lastIndex(), ref.index, 'follower 2 has it');
  const finish = (): void => {
    h.raft(1).advance(rd);
    leader.holdPersist = false;
    h.deliverAll();
  };
  return { h, index: ref.index, finish };
}

test('the leader counts its own entry only once its append is durable (asynchronous persistence)', () => {
  const { h, index, finish } = leaderAppendInFlight();
  assert.ok(h.raft(1).committed < index, 'follower 2 alone is not a quorum without the leader');
  finish();
  assert.equal(h.raft(1).committed, index);
});

test('a member whose acknowledged entries were lost (forgetMatch) no longer completes a quorum with them', () => {
  for (const forget of [false, true]) {
    const { h, index, finish } = leaderAppendInFlight();
    // Follower 2's replica is rebuilt from an older snapshot: what it acknowledged is gone.
    if (forget) h.raft(1).forgetMatch(2);
    finish();
    if (!forget) {
      assert.equal(h.raft(1).committed, index, 'the leader and follower 2 make a quorum');
      continue;
    }
    assert.ok(h.raft(1).committed < index, 'the leader alone holds it durably: not committed');
    assert.equal(h.raft(1).status().progress!.get(2)!.match, 0);
    h.cutLink(1, 2); // follower 2 is held while it is rebuilt: it acknowledges nothing
    h.healLink(1, 3);
    h.tickAll();
    h.deliverAll();
    assert.equal(h.raft(1).committed, index, 'follower 3 completes the quorum');
  }
});

test('committed entries are handed to the host only once they are durable locally', () => {
  const h = new Harness([1, 2, 3]);
  h.elect(1);
  const f = h.node(2);
  f.holdPersist = true;
  h.proposeString(1, 'x');
  h.deliverAll();
  h.tickAll();
  h.deliverAll();
  const rd = f.held!;
  assert.ok(rd.entries.length > 0);
  assert.equal(rd.committedEntries.length, 0, 'nothing applied before it is durable');
  f.holdPersist = false;
  h.persist(2);
  h.deliverAll();
  h.tickAll();
  h.deliverAll();
  assert.equal(f.applied.at(-1)?.index, 3);
});

test('flow control: in-flight MsgApp, entries and bytes per message are bounded', () => {
  const h = new Harness([1, 2, 3], { maxInflightMsgs: 2, maxEntriesPerMsg: 3, maxSizePerMsg: 1 << 20 });
  h.elect(1);
  const payload = 'x'.repeat(100);
  for (let i = 0; i < 20; i++) h.proposeString(1, payload);
  h.processReadies();
  const first = h.queue.filter((m) => m.type === 'app' && m.to === 2) as MsgApp[];
  assert.equal(first.length, 2, 'two MsgApp in flight, the pipeline depth');
  assert.ok(first.every((m) => m.entries.length <= 3));
  h.deliverAll();
  assert.equal(h.raft(2).committed, 22);

  const h2 = new Harness([1, 2, 3], { maxSizePerMsg: 300, maxInflightBytes: 10_000 });
  h2.elect(1);
  for (let i = 0; i < 20; i++) h2.proposeString(1, payload);
  h2.processReadies();
  const apps = h2.queue.filter((m) => m.type === 'app' && m.to === 2) as MsgApp[];
  assert.ok(apps.every((m) => m.entries.length <= 2), 'at most 300 bytes (2 entries of ~124) per message');
  h2.deliverAll();
  assert.equal(h2.raft(3).committed, 22);
});

test('a lost MsgApp in a full pipeline is recovered through heartbeats', () => {
  const h = new Harness([1, 2, 3], { maxInflightMsgs: 1, maxEntriesPerMsg: 1 });
  h.elect(1);
  let dropped = 0;
  h.filter = (m) => !(m.type === 'app' && m.to === 2 && m.entries.length > 0 && dropped++ < 1);
  for (let i = 0; i < 4; i++) h.proposeString(1, `v${i}`);
  h.deliverAll();
  assert.equal(dropped, 1);
  for (let i = 0; i < 5; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.equal(h.raft(2).log.lastIndex(), 6);
  assert.equal(h.raft(2).committed, 6);
});

test('proposals: followers refuse with a leader hint, and the uncommitted backlog is bounded', () => {
  const h = new Harness([1, 2, 3], { maxUncommittedEntriesBytes: 1000 });
  h.elect(1);
  assert.throws(() => h.proposeString(2, 'x'), (e: unknown) => e instanceof NotLeader && e.leaderHint === '1');
  h.isolate(1);
  let accepted = 0;
  assert.throws(() => {
    for (;;) {
      h.proposeString(1, 'y'.repeat(100));
      accepted++;
    }
  }, Unavailable);
  assert.ok(accepted >= 7 && accepted <= 8, `accepted ${accepted}`);
});

test('a vote leaves only in the Ready that persists it, and one Ready is outstanding at a time', () => {
  const h = new Harness([1, 2, 3]);
  h.raft(1).campaign();
  h.processReadies();
  const preVotes = h.queue.splice(0).filter((m) => m.to === 2);
  for (const m of preVotes) h.raft(2).step(m);
  h.processReadies();
  h.raft(1).step(h.queue.splice(0).find((m) => m.type === 'preVoteResp')!);
  h.processReadies();
  const vote = h.queue.splice(0).find((m) => m.type === 'vote' && m.to === 2)!;
  h.raft(2).step(vote);
  const r2 = h.raft(2);
  assert.equal(r2.hasReady(), true);
  const rd = r2.ready();
  assert.deepEqual(rd.hardState, { term: 2, vote: 1, commit: 1 });
  assert.equal(rd.mustSync, true);
  assert.ok(rd.messages.some((m) => m.type === 'voteResp' && !m.reject), 'the grant travels with the vote it depends on');
  assert.equal(r2.hasReady(), false, 'nothing more until advance');
  assert.throws(() => r2.ready(), /outstanding/);
  r2.advance(rd);
});

test('proposals made while a Ready is being persisted ride in the next batch', () => {
  const h = new Harness([1]);
  h.elect(1);
  const r = h.raft(1);
  h.proposeString(1, 'a');
  const rd1 = r.ready();
  assert.equal(rd1.entries.length, 1);
  h.proposeString(1, 'b');
  h.proposeString(1, 'c');
  assert.equal(r.hasReady(), false);
  h.node(1).storage.append(rd1.entries);
  r.advance(rd1);
  const rd2 = r.ready();
  assert.deepEqual(rd2.entries.map((e) => e.index), [4, 5]);
  assert.deepEqual(rd2.committedEntries.map((e) => e.index), [3], 'a single voter commits once durable');
});
