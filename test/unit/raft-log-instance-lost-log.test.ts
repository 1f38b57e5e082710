/**
 * A member whose log was lost comes back under its id (a PG replica retired while cut off and
 * wanted again; a rebuilt one) as a new instance of its log (Config.logInstance). The leader's
 * progress for it may still hold what the previous instance acknowledged: its heartbeats then
 * name a commit beyond the new log, and its appends start past the new log's end. The new
 * instance answers, the leader sees another logInstance, forgets the old one's match and
 * catches the new one up from scratch; until then nothing the old one held counts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, describeMessage } from '../../src/sim/harness.js';
import { MemoryStorage } from '../../src/raft/storage.js';
import type { Message, MsgAppResp, MsgSnap } from '../../src/raft/types.js';

const logInstances = new Map([
  [1, 11],
  [2, 22],
  [3, 33],
]);

/** A 3-voter group led by node 1, every node with its own logInstance, `writes` entries committed everywhere. */
function replicatedGroup(writes: number): Harness {
  const h = new Harness([1, 2, 3]);
  for (const [id, logInstance] of logInstances) h.add(id, h.node(id).storage, { logInstance });
  h.elect(1);
  for (let i = 0; i < writes; i++) h.proposeString(1, `w${i}`);
  h.deliverAll();
  return h;
}

function matchOf(h: Harness, leader: number, id: number): number {
  const pr = h.raft(leader).status().progress?.get(id);
  assert.ok(pr, `node ${leader} has no progress for node ${id}`);
  return pr.match;
}

/** Node `id` restarts with an empty log (its term and vote kept, as a rejoined PG replica's are) as `logInstance`. */
function loseLog(h: Harness, id: number, logInstance: number): void {
  const old = h.node(id).storage.hardState;
  const fresh = new MemoryStorage();
  fresh.setHardState({ term: old.term, vote: old.vote, commit: 0 });
  h.queue = h.queue.filter((m) => m.to !== id && m.from !== id);
  h.add(id, fresh, { logInstance });
}

test('a member back with an empty log under a new logInstance: the leader forgets the old match and catches it up', () => {
  const h = replicatedGroup(5);
  const last = h.raft(1).lastIndex;
  assert.equal(matchOf(h, 1, 3), last);

  loseLog(h, 3, 333);
  // The leader's next heartbeat names commit `last` to a node holding nothing.
  h.tickAll();
  h.deliverAll();

  assert.equal(h.node(3).storage.lastIndex(), last, 'node 3 caught up to the leader');
  assert.equal(matchOf(h, 1, 3), last);
  assert.equal(h.raft(3).committed, last);

  // Node 3's acknowledgements count again: with node 2 cut off, a write commits on 1 and 3.
  h.isolate(2);
  const w = h.proposeString(1, 'after');
  h.deliverAll();
  assert.equal(h.raft(1).committed, w.index);
  assert.equal(h.node(3).storage.lastIndex(), w.index);
});

test('answers of the instance the leader knows change nothing; a restart with the log intact under a new instance loses nothing', () => {
  const h = replicatedGroup(4);
  const probesTo3 = (trace: string[]): number => trace.filter((l) => l.startsWith('1->3 app')).length;
  h.takeTrace();
  h.tickAll();
  h.deliverAll();
  const steady = h.takeTrace();
  assert.equal(probesTo3(steady), 0, `appends to node 3 in a quiet heartbeat round: ${steady.join(' | ')}`);

  // A restart with the log intact under a new logInstance: one probe, nothing lost.
  const before = matchOf(h, 1, 3);
  h.restart(3, { logInstance: 3333 });
  h.proposeString(1, 'x');
  h.deliverAll();
  assert.equal(matchOf(h, 1, 3), before + 1);
  assert.equal(h.raft(3).committed, before + 1);
});

test('answers carry the logInstance; a node configured without one sends none', () => {
  const h = replicatedGroup(1);
  const seen: Message[] = [];
  h.filter = (m) => {
    if (m.type === 'appResp' || m.type === 'snapResp') seen.push(m);
    return true;
  };
  h.proposeString(1, 'y');
  h.deliverAll();
  const fromFollowers = seen.filter((m) => m.from !== 1);
  assert.ok(fromFollowers.length >= 2);
  for (const m of fromFollowers) assert.equal((m as { logInstance?: number }).logInstance, logInstances.get(m.from));

  const plain = new Harness([1, 2, 3]);
  plain.elect(1);
  const plainSeen: Message[] = [];
  plain.filter = (m) => {
    if (m.type === 'appResp') plainSeen.push(m);
    return true;
  };
  plain.proposeString(1, 'z');
  plain.deliverAll();
  assert.ok(plainSeen.length >= 2);
  for (const m of plainSeen) assert.equal('logInstance' in m, false);
});

test('an acknowledgement of the old instance delivered after the new instance answered is dropped', () => {
  const h = replicatedGroup(3);
  h.cutLink(1, 2);
  const w = h.proposeString(1, 'only-on-1');
  // Node 3 (instance 33) acknowledges the entry; the acknowledgement is held back in the network.
  let late: MsgAppResp | undefined;
  h.filter = (m) => {
    if (m.from === 3 && m.type === 'appResp' && m.index === w.index && !late) {
      late = { ...m };
      return false;
    }
    return true;
  };
  h.deliverAll();
  assert.ok(late, 'node 3 acknowledged the entry');
  assert.ok(h.raft(1).committed < w.index);
  // Node 3 loses its log; the new instance answers the leader's heartbeat first (its catch-up held).
  loseLog(h, 3, 333);
  h.filter = (m) => !(m.from === 1 && m.to === 3 && m.type === 'app');
  h.tickAll();
  h.deliverAll();
  assert.equal(matchOf(h, 1, 3), 0, 'the leader forgot the old instance on the new one\'s answer');
  // Then the old instance's acknowledgement arrives (another connection, late): not counted.
  h.filter = (m) => m.to !== 3;
  h.queue.push(late!);
  h.deliverAll();
  assert.equal(matchOf(h, 1, 3), 0);
  assert.ok(h.raft(1).committed < w.index, `entry ${w.index} committed on the leader's copy and a lost instance's word`);
  // Node 3 caught up for real, the entry commits.
  h.filter = undefined;
  h.tickAll();
  h.deliverAll();
  assert.equal(h.raft(1).committed, w.index);
  assert.equal(h.node(3).storage.lastIndex(), w.index);
});

test("a heartbeat commits on a follower only what this term's leader has matched: a replica rebuilt from a deposed leader's point keeps that leader's entries uncommitted", () => {
  const text = (d: Uint8Array): string => new TextDecoder().decode(d);
  const h = replicatedGroup(1);
  const k = h.raft(1).committed;
  const oldTerm = h.raft(1).currentTerm;
  // Node 1 is cut off and keeps believing it leads; it appends two entries no one else holds.
  h.isolate(1);
  h.proposeString(1, 's1');
  h.proposeString(1, 's2');
  h.deliverAll();
  // Node 2 leads a newer term with node 3's vote and commits other entries at those indexes.
  for (let i = 0; i < 10; i++) {
    h.tick(2);
    h.tick(3);
    h.processReadies();
    h.queue = [];
  }
  h.raft(2).campaign();
  h.deliverAll();
  assert.equal(h.raft(2).currentRole, 'leader');
  h.proposeString(2, 'n1');
  h.proposeString(2, 'n2');
  h.deliverAll();
  // Node 3's data dir is lost; it is rebuilt at the point the deposed node 1 served (its commit, its term).
  const fresh = new MemoryStorage([1, 2, 3]);
  const confState = { voters: [1, 2, 3], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false };
  fresh.applySnapshot({ metadata: { index: k, term: h.node(1).storage.term(k)!, confState }, data: h.node(1).storage.snapshot().data });
  fresh.setHardState({ term: oldTerm, vote: 1, commit: k });
  h.queue = h.queue.filter((m) => m.to !== 3 && m.from !== 3);
  h.add(3, fresh, { logInstance: 333 });
  // The deposed node 1 reaches node 3 alone: node 3 takes its two entries (its answers lost).
  h.heal();
  h.cutLink(1, 2);
  h.cutLink(2, 3);
  h.filter = (m) => !(m.from === 3 && m.to === 1 && m.type === 'appResp' && !m.reject);
  for (let i = 0; i < 3; i++) {
    h.tick(1, 2);
    h.deliverAll();
  }
  h.filter = undefined;
  // Node 2's heartbeat reaches node 3 with the commit of node 3's lost instance's match.
  h.cutLink(1, 3);
  h.healLink(2, 3);
  h.tick(2, 2);
  h.deliverAll();
  for (const e of h.node(3).applied) {
    const theirs = h.node(2).storage.entries(e.index, e.index + 1, 1 << 20)[0];
    assert.equal(`${e.term}:${text(e.data)}`, `${theirs.term}:${text(theirs.data)}`, `node 3 applied at ${e.index} what the leader of the newer term did not commit there`);
  }
});

test('a node that knows no membership (a member retired and back, its log dropped) grants no vote', () => {
  const h = replicatedGroup(2);
  loseLog(h, 3, 333);
  // The leader is cut off; node 2 campaigns once its election timeout passes, and only node 3
  // can answer, whose empty log makes anyone up to date.
  h.isolate(1);
  h.takeTrace();
  for (let i = 0; i < 40; i++) {
    h.tick(2);
    h.tick(3);
    h.deliverAll();
  }
  const answers = h.takeTrace().filter((l) => l.startsWith('3->2 preVoteResp') || l.startsWith('3->2 voteResp'));
  assert.ok(answers.length > 0, 'node 3 answered a campaign');
  for (const a of answers) assert.doesNotMatch(a, /grant/, `node 3 granted: ${a}`);
  assert.notEqual(h.raft(2).currentRole, 'leader');
});

test('a follower restarted under a new instance in an idle group learns the commit from heartbeats alone', () => {
  // Followers learn the commit from the next append or heartbeat, as on the host.
  const h = new Harness([1, 2, 3], { eagerCommitNews: false });
  for (const [id, logInstance] of logInstances) h.add(id, h.node(id).storage, { logInstance });
  h.elect(1);
  for (let i = 0; i < 3; i++) h.proposeString(1, `w${i}`);
  h.deliverAll();
  const committed = h.raft(1).committed;
  assert.equal(matchOf(h, 1, 3), h.raft(1).lastIndex, 'node 3 holds every entry');
  // Node 3 restarts before a heartbeat told it the last commit; nothing more is written.
  h.restart(3, { logInstance: 3333 });
  assert.ok(h.raft(3).committed < committed, `node 3 restarted at commit ${h.raft(3).committed}`);
  for (let i = 0; i < 3; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.equal(h.raft(3).committed, committed);
});

test('a snapshot sent to an earlier instance of a log and delivered to the next is refused; the leader snapshots the new instance', () => {
  const h = replicatedGroup(3);
  h.isolate(3);
  for (let i = 0; i < 6; i++) h.proposeString(1, `v${i}`);
  h.deliverAll();
  const leader = h.node(1);
  const snapIndex = leader.raft.log.applied;
  leader.storage.createSnapshot(snapIndex, leader.raft.confStateAt(snapIndex), new Uint8Array([1, 2, 3]));
  leader.storage.compact(snapIndex);
  h.heal();
  // The snapshot goes out to instance 33 of node 3's log and is held in the network.
  const held: MsgSnap[] = [];
  h.filter = (m: Message) => {
    if (m.type !== 'snap' || m.to !== 3) return true;
    held.push(m);
    return false;
  };
  h.tickAll();
  h.deliverAll();
  assert.ok(held.length > 0, 'the leader sent node 3 a snapshot');
  assert.equal(held[0].logInstance, 33, 'a snapshot names the instance it is meant for');

  // Node 3 loses its log (retired and wanted back) before the snapshot arrives.
  loseLog(h, 3, 333);
  h.filter = undefined;
  h.raft(3).step(held[0]);
  h.processReadies();
  assert.equal(h.raft(3).committed, 0, 'the stale snapshot was not installed');
  assert.equal(h.node(3).storage.snapshot().metadata.index, 0);
  const answer = h.queue.find((m) => m.from === 3 && m.to === 1);
  assert.ok(answer && answer.type === 'snapResp' && answer.reject, `node 3 answered ${answer && describeMessage(answer)}`);
  assert.equal(answer.logInstance, 333);

  // The refusal tells the leader of the new instance: it probes, then snapshots instance 333.
  h.takeTrace();
  const sent: MsgSnap[] = [];
  h.filter = (m: Message) => {
    if (m.type === 'snap' && m.to === 3) sent.push(m);
    return true;
  };
  h.deliverAll();
  h.tickAll();
  h.deliverAll();
  assert.ok(sent.length > 0 && sent.every((m) => m.logInstance === 333), `snapshots to node 3 named ${sent.map((m) => m.logInstance).join(',')}`);
  assert.equal(h.node(3).storage.snapshot().metadata.index, snapIndex);
  assert.equal(h.raft(3).committed, h.raft(1).committed);
});
