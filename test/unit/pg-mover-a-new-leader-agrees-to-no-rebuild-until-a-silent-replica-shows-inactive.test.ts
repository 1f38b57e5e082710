/**
 * `raftblock pool repair` rebuilds one replica at a time: the PG's leader agrees to a rebuild
 * only while the other voters keep a quorum, and counts a replica it agreed to as down until
 * that replica asks for its repair point. That count lives on the leader that agreed. A new
 * leader elected between an agreement and the replica's stop knew nothing of it: the replica
 * had answered the new leader's first append (replicating, recently active) and stayed so in
 * its view until the next check-quorum round, so a second rebuild asked for meanwhile was
 * agreed and two of three replicas were held at once.
 *
 * A leader now agrees to no rebuild until it has led for two check-quorum rounds: by then a
 * replica that fell silent after an agreement it cannot see shows inactive, and the second
 * rebuild is refused as a risk to the quorum.
 *
 * An agreement counts only in the term it was given in: a replica that saw a newer term before
 * it stopped resumes as it was, and one that did not answers nothing in the newer term.
 *
 * Active means heard from within the last election timeout: a replica answering all along is
 * active also right after a check-quorum round has cleared the core's flag (a check retried in
 * step with the rounds was refused for 8 s on a healthy PG).
 *
 * Node `self` leads the PG (a real Raft node, three voters, its log in memory); the tests play
 * the two followers and the host's clock.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { PgMover, targetOf } from '../../src/cluster/pg-mover.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { MemoryStorage, RaftNode, SeededRng, defaultConfig, type Message } from '../../src/raft/index.js';
import { zonedMap } from '../helpers/map.js';
import { moverDeps, moverGroup, persistReadies } from '../helpers/pg-mover.js';
import { tempDir } from '../helpers/tools.js';

const electionTicks = 10;

/**
 * Node `self` leads a PG of three voters whose followers `a` and `b` answer while in `answering`;
 * `tick` advances the leader's clock one tick and delivers what it sent, `tickAlone` only ticks.
 */
function ledPg(t: TestContext) {
  const map = zonedMap(3, 8);
  const g = pgGroupId(map.pools[0].id, 0);
  const [self, a, b] = targetOf(map, g)!;
  const storage = new MemoryStorage([self, a, b]);
  const raft = new RaftNode({ ...defaultConfig(self, new SeededRng(7)), electionTicks }, storage);
  const answering = new Set([a, b]);
  const pump = (): void => persistReadies(raft, storage, answer);
  const answer = (m: Message): void => {
    if (!answering.has(m.to)) return;
    const base = { from: m.to, to: m.from, term: m.term };
    if (m.type === 'vote' || m.type === 'preVote') raft.step({ ...base, type: m.type === 'vote' ? 'voteResp' : 'preVoteResp', reject: false });
    else if (m.type === 'app') {
      const last = m.entries.length > 0 ? m.entries[m.entries.length - 1].index : m.index;
      raft.step({ ...base, type: 'appResp', reject: false, index: last, rejectHint: 0, logTerm: 0, seq: m.seq, tick: m.tick });
    } else if (m.type === 'heartbeat') raft.step({ ...base, type: 'heartbeatResp', seq: m.seq, tick: m.tick });
  };

  raft.campaign();
  for (let i = 0; i < 10 && raft.currentRole !== 'leader'; i++) pump();
  pump();
  assert.equal(raft.currentRole, 'leader', 'self is elected by both followers');

  let ticksLed = 0;
  const group = moverGroup(g, raft);
  const mover = new PgMover(
    moverDeps({
      nodeId: self,
      dataDir: tempDir(t, 'raftblock-mover-rebuild-'),
      map: () => map,
      connectedNodes: () => new Set([a, b]),
      host: { groups: new Map([[g, group]]), ticksLed: () => ticksLed, electionTicks, tickMs: 100 } as never,
    }),
  );
  const tickAlone = (): void => {
    raft.tick();
    ticksLed++;
  };
  const tick = (): void => {
    tickAlone();
    pump();
  };
  /** Self loses the leadership to a newer term, then wins it back in the next. */
  const reelect = (): void => {
    raft.step({ type: 'heartbeat', from: b, to: self, term: raft.currentTerm + 1, commit: 0, seq: 1, tick: 1 });
    const role = (): string => raft.currentRole;
    assert.equal(role(), 'follower');
    raft.campaign();
    for (let i = 0; i < 10 && role() !== 'leader'; i++) pump();
    pump();
    assert.equal(role(), 'leader', 'self is elected again');
    ticksLed = 0;
  };
  return { g, self, a, b, raft, mover, answering, tick, tickAlone, reelect, ticksLed: () => ticksLed };
}

test('a new PG leader agrees to no rebuild until a replica silent since its election shows inactive', async (t) => {
  /** `a` falls silent once its rebuild (agreed by the old leader) starts. */
  const { g, self, a, b, raft, mover, answering, tick } = ledPg(t);

  // Both followers have answered the new leader: each is replicating, caught up and active.
  const st = raft.status();
  for (const n of [a, b]) assert.equal(st.progress?.get(n)?.recentActive, true, `node ${n} answered the new leader`);

  // Now `a` stops: the previous leader agreed to rebuild it, which this leader cannot know.
  answering.delete(a);
  assert.throws(
    () => mover.rebuildCheck(g, b),
    (err: Error & { code?: string }) => err.code === 'UNAVAILABLE' && /became its leader moments ago.*try again in 2100 ms/.test(err.message),
    'a leader of no ticks agrees to nothing',
  );
  // Leader affinity hands the PG to neither node while it waits: b asked, a's ask went elsewhere.
  assert.equal(mover.askedToRebuildLately(g, b), true, 'b asked here, refused');
  assert.equal(mover.askedToRebuildLately(g, a), false);
  for (let i = 0; i < 2 * electionTicks; i++) tick();
  assert.throws(() => mover.rebuildCheck(g, b), /became its leader moments ago.*try again in 100 ms/, 'nor after two rounds less a tick');
  tick();
  assert.equal(raft.currentRole, 'leader', 'b keeps the leader a quorum');
  assert.throws(
    () => mover.rebuildCheck(g, b),
    (err: Error & { code?: string }) => err.code === 'PG_QUORUM_AT_RISK' && new RegExp(`not: ${a}`).test(err.message),
    'the silent replica now counts as down: the second rebuild is refused',
  );

  // Once `a` is back and answering, `b`'s rebuild is agreed to.
  answering.add(a);
  for (let i = 0; i < electionTicks; i++) tick();
  const agreed = mover.rebuildCheck(g, b);
  assert.equal(agreed.leader, self);
});

test('a replica answering all along counts as active right after a check-quorum round has cleared its flag', async (t) => {
  const { g, self, b, mover, tick, tickAlone, ticksLed } = ledPg(t);
  // Led past the settling wait, up to the tick before the third check-quorum round.
  while (ticksLed() < 3 * electionTicks - 1) tick();
  // The round's tick, and the rebuild asked for before any answer to it arrives: `a` answered
  // the message sent a tick ago. (A caller retrying in step with the rounds always lands here.)
  tickAlone();
  const agreed = mover.rebuildCheck(g, b);
  assert.equal(agreed.leader, self);
});

test('a rebuild agreed in an earlier term of the same leader counts for nothing once it leads again', (t) => {
  const { g, self, a, b, raft, mover, tick, reelect } = ledPg(t);
  for (let i = 0; i <= 2 * electionTicks; i++) tick();
  const first = mover.rebuildCheck(g, a);
  assert.throws(() => mover.rebuildCheck(g, b), /not: .*\(being rebuilt\)/, 'two replicas are never agreed to in one term');
  // Before `a` stops, self loses the leadership and wins it back: `a` saw the newer terms, so it
  // resumed as it was (rebuildInPlace) and answers as any follower.
  reelect();
  assert.ok(raft.currentTerm > first.term);
  for (let i = 0; i <= 2 * electionTicks; i++) tick();
  const second = mover.rebuildCheck(g, b);
  assert.equal(second.leader, self);
});
