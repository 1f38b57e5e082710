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
import { Harness } from '../../src/sim/harness.js';
import { MemoryStorage } from '../../src/raft/storage.js';
import type { Message } from '../../src/raft/types.js';

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

test('answers of the instance the leader knows change nothing; a new one makes the leader probe', () => {
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
