/**
 * The network shape check of Raft messages accepts every message the core sends — elections,
 * appends, heartbeats, snapshots to a follower that fell behind a compaction, after a trip
 * through the frame codec — and refuses malformed ones and ones speaking for another node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameDecoder } from '../../src/cluster/frame.js';
import { isWellFormedMessage } from '../../src/cluster/raft-message-check.js';
import { MemoryStorage, RaftNode, SeededRng, defaultConfig, type Message } from '../../src/raft/index.js';

/** The check as a plain predicate (no narrowing of the samples below). */
const check = (m: unknown, from: number, to: number): boolean => isWellFormedMessage(m, from, to);

/** The messages as a peer receives them: through one encoded and decoded frame. */
function overTheWire(msgs: Message[]): Message[] {
  const frames = new FrameDecoder().push(encodeFrame({ from: '1', addr: '', epoch: 1, msgs: msgs.map((m) => ({ g: 65536, m })) }));
  return frames.flatMap((f) => (f.msgs ?? []).map((x) => x.m as Message));
}

function cluster(ids: number[]): Map<number, { raft: RaftNode; storage: MemoryStorage }> {
  const out = new Map<number, { raft: RaftNode; storage: MemoryStorage }>();
  for (const id of ids) {
    const storage = new MemoryStorage(ids);
    out.set(id, { raft: new RaftNode({ ...defaultConfig(id, new SeededRng(id)), logInstance: 100 + id }, storage), storage });
  }
  return out;
}

test('every message the core sends passes the check, after the frame codec', () => {
  const ids = [1, 2, 3];
  const nodes = cluster(ids);
  const seen = new Set<string>();
  const down = new Set<number>();
  const deliver = (msgs: Message[]): void => {
    for (const m of overTheWire(msgs)) {
      assert.ok(isWellFormedMessage(m, m.from, m.to), `refused ${JSON.stringify(m)}`);
      seen.add(m.type);
      if (!down.has(m.to)) nodes.get(m.to)!.raft.step(m);
    }
  };
  const round = (): void => {
    for (const [id, n] of nodes) {
      if (down.has(id) || !n.raft.hasReady()) continue;
      const rd = n.raft.ready();
      if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
      n.storage.append(rd.entries);
      if (rd.hardState) n.storage.setHardState(rd.hardState);
      deliver(rd.messages);
      n.raft.advance(rd);
    }
  };
  nodes.get(1)!.raft.campaign();
  for (let i = 0; i < 20; i++) round();
  const leader = [...nodes.values()].find((n) => n.raft.status().softState.role === 'leader')!;
  assert.ok(leader, 'no leader elected');
  // Node 3 falls behind a compaction: it can only catch up from a snapshot.
  const lagging = ids.find((id) => nodes.get(id) !== leader)!;
  down.add(lagging);
  for (let i = 0; i < 50; i++) {
    leader.raft.propose(new Uint8Array([i, 1, 2, 3]));
    round();
  }
  const applied = leader.storage.lastIndex();
  leader.storage.createSnapshot(applied, leader.raft.confStateAt(applied), new Uint8Array([9, 9]));
  leader.storage.compact(applied);
  down.delete(lagging);
  for (let i = 0; i < 200; i++) {
    for (const n of nodes.values()) n.raft.tick();
    round();
  }
  for (const type of ['preVote', 'preVoteResp', 'vote', 'voteResp', 'app', 'appResp', 'heartbeat', 'heartbeatResp', 'snap']) {
    assert.ok(seen.has(type), `no ${type} message seen (seen: ${[...seen].join(', ')})`);
  }
});

test('malformed messages and messages speaking for another node are refused', () => {
  const app = { type: 'app', from: 2, to: 1, term: 3, index: 5, logTerm: 3, entries: [{ index: 6, term: 3, type: 0, data: new Uint8Array(4) }], commit: 5, seq: 1, tick: 7 };
  assert.ok(check(app, 2, 1));
  assert.ok(!check(app, 3, 1), 'from another node');
  assert.ok(!check(app, 2, 4), 'to another node');
  for (const bad of [
    { ...app, index: 'x' },
    { ...app, term: -1 },
    { ...app, term: 1.5 },
    { ...app, entries: 5 },
    { ...app, entries: [{ index: 6, term: 3, type: 0, data: 'text' }] },
    { ...app, entries: [{ index: 6, term: 3, type: 7, data: new Uint8Array(0) }] },
    { ...app, seq: undefined },
    { ...app, type: 'bogus' },
    { type: 'vote', from: 2, to: 1, term: 3, index: 1, logTerm: 1 },
    { type: 'snap', from: 2, to: 1, term: 3, metadata: { index: 1, term: 1, confState: { voters: ['a'] } }, offset: 0, totalBytes: 0, chunk: new Uint8Array(0), seq: 0, tick: 0 },
    null,
    'app',
    [app],
  ]) {
    assert.ok(!check(bad, 2, 1), `accepted ${JSON.stringify(bad)}`);
  }
  // An answer names the instance of its sender's log, or nothing (a build before the field).
  const appResp = { type: 'appResp', from: 2, to: 1, term: 3, reject: false, index: 6, rejectHint: 0, logTerm: 0, seq: 1, tick: 7 };
  const snapResp = { type: 'snapResp', from: 2, to: 1, term: 3, index: 9, offset: 0, reject: false, seq: 1, tick: 7 };
  for (const resp of [appResp, snapResp]) {
    assert.ok(check(resp, 2, 1));
    assert.ok(check({ ...resp, logInstance: 2 ** 40 }, 2, 1));
    for (const logInstance of [-1, 1.5, '7', null]) assert.ok(!check({ ...resp, logInstance }, 2, 1), `accepted logInstance ${String(logInstance)} on ${resp.type}`);
  }
  // A snapshot chunk names the instance it is meant for, or nothing.
  const snap = { type: 'snap', from: 1, to: 2, term: 3, metadata: { index: 1, term: 1, confState: { voters: [1, 2] } }, offset: 0, totalBytes: 0, chunk: new Uint8Array(0), seq: 0, tick: 0 };
  assert.ok(check(snap, 1, 2));
  assert.ok(check({ ...snap, logInstance: 2 ** 40 }, 1, 2));
  for (const logInstance of [-1, 1.5, '7', null]) assert.ok(!check({ ...snap, logInstance }, 1, 2), `accepted logInstance ${String(logInstance)} on snap`);
});
