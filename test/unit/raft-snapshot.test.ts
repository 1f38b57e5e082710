import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { RaftNode } from '../../src/raft/node.js';
import { MemoryStorage } from '../../src/raft/storage.js';
import { SeededRng } from '../../src/raft/rng.js';
import { EntryType, defaultConfig, type Message, type MsgSnap } from '../../src/raft/types.js';

function compactLeader(h: Harness, id: number, data: Uint8Array): number {
  const n = h.node(id);
  const idx = n.raft.log.applied;
  n.storage.createSnapshot(idx, n.raft.confStateAt(idx), data);
  n.storage.compact(idx);
  return idx;
}

test('a follower behind a compacted log receives the snapshot in chunks, with a bounded window, then entries', () => {
  const h = new Harness([1, 2, 3], { maxSnapshotChunkBytes: 10, maxInflightSnapshotChunks: 2 });
  h.elect(1);
  h.isolate(3);
  for (let i = 0; i < 10; i++) h.proposeString(1, `v${i}`);
  h.deliverAll();
  const image = new Uint8Array(45).map((_, i) => i);
  const snapIndex = compactLeader(h, 1, image);
  assert.equal(snapIndex, 12);
  h.heal();
  let maxWindow = 0;
  let outstanding = 0;
  h.filter = (m: Message) => {
    if (m.type === 'snap') outstanding++;
    if (m.type === 'snapResp' || (m.type === 'appResp' && m.from === 3)) outstanding = Math.max(0, outstanding - 1);
    maxWindow = Math.max(maxWindow, outstanding);
    return true;
  };
  h.tickAll();
  h.deliverAll();
  const chunks = h.takeTrace().filter((l) => l.includes(' snap t'));
  assert.deepEqual(chunks, [
    '1->3 snap t2 snap@12 [0+10/45]',
    '1->3 snap t2 snap@12 [10+10/45]',
    '1->3 snap t2 snap@12 [20+10/45]',
    '1->3 snap t2 snap@12 [30+10/45]',
    '1->3 snap t2 snap@12 [40+5/45]',
  ]);
  assert.ok(maxWindow <= 2, `window ${maxWindow}`);
  const s3 = h.node(3).storage.snapshot();
  assert.equal(s3.metadata.index, 12);
  assert.deepEqual(s3.data, image);
  h.proposeString(1, 'after');
  h.deliverAll();
  assert.equal(h.raft(3).committed, 13);
  assert.equal(h.node(3).applied.at(-1)?.index, 13);
});

test('a lost snapshot chunk is resent after a heartbeat', () => {
  const h = new Harness([1, 2, 3], { maxSnapshotChunkBytes: 8, maxInflightSnapshotChunks: 4 });
  h.elect(1);
  h.isolate(3);
  for (let i = 0; i < 5; i++) h.proposeString(1, `v${i}`);
  h.deliverAll();
  compactLeader(h, 1, new Uint8Array(40).fill(7));
  h.heal();
  let dropped = false;
  h.filter = (m) => !(m.type === 'snap' && (m as MsgSnap).offset === 16 && !dropped && (dropped = true));
  for (let i = 0; i < 4; i++) {
    h.tickAll();
    h.deliverAll();
  }
  assert.ok(dropped);
  assert.equal(h.node(3).storage.snapshot().metadata.index, 7);
  assert.deepEqual(h.node(3).storage.snapshot().data, new Uint8Array(40).fill(7));
});

function follower(): { raft: RaftNode; storage: MemoryStorage } {
  const storage = new MemoryStorage([1, 2, 3]);
  const ents = [];
  for (let i = 2; i <= 10; i++) ents.push({ term: 2, index: i, type: EntryType.Normal, data: new Uint8Array([i]) });
  storage.append(ents);
  storage.setHardState({ term: 2, vote: 1, commit: 5 });
  const raft = new RaftNode({ ...defaultConfig(2, new SeededRng(3)), applied: 1 }, storage);
  return { raft, storage };
}

function snapMsg(index: number, term: number): MsgSnap {
  const cs = { voters: [1, 2, 3], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false };
  return { type: 'snap', from: 1, to: 2, term: 2, seq: 0, tick: 0, metadata: { index, term, confState: cs }, offset: 0, totalBytes: 3, chunk: new Uint8Array([9, 9, 9]) };
}

test('a snapshot that overlaps the follower log (same index and term held) keeps the log and moves commit', () => {
  const { raft } = follower();
  raft.step(snapMsg(8, 2));
  const rd = raft.ready();
  assert.equal(rd.snapshot, undefined, 'nothing to install');
  assert.equal(raft.log.lastIndex(), 10, 'entries after the snapshot kept');
  assert.equal(raft.committed, 8);
  // Answered with the snapshot's index, not the kept tail's end: the leader learns of the tail
  // through its next append, where any entry of it from an older term is replaced.
  const resp = rd.messages.find((m) => m.type === 'appResp');
  assert.ok(resp && resp.type === 'appResp' && !resp.reject && resp.index === 8, JSON.stringify(resp));
});

test('a snapshot that conflicts with the follower log replaces it', () => {
  const { raft, storage } = follower();
  raft.step(snapMsg(8, 3 /* a term the follower does not have at 8 */));
  const rd = raft.ready();
  assert.equal(rd.snapshot?.metadata.index, 8);
  assert.equal(raft.log.lastIndex(), 8);
  assert.equal(raft.committed, 8);
  assert.deepEqual(raft.confStateAt(5).voters, [1, 2, 3], 'the host may still snapshot at its old applied index');
  storage.applySnapshot(rd.snapshot!);
  raft.advance(rd);
  assert.equal(raft.log.applied, 8);
  assert.equal(storage.firstIndex(), 9);
  const again = new RaftNode({ ...defaultConfig(2, new SeededRng(4)), applied: 8 }, storage);
  assert.equal(again.log.lastIndex(), 8, 'restart from the installed snapshot');
});

test('a snapshot older than the commit index is answered without installing', () => {
  const { raft } = follower();
  raft.step(snapMsg(4, 2));
  const rd = raft.ready();
  assert.equal(rd.snapshot, undefined);
  const resp = rd.messages.find((m) => m.type === 'appResp');
  assert.ok(resp && resp.type === 'appResp' && resp.index === 5);
});

test('MemoryStorage: compaction, term lookups and the bootstrap snapshot', () => {
  const s = new MemoryStorage([1, 2, 3]);
  assert.equal(s.firstIndex(), 2);
  assert.equal(s.lastIndex(), 1);
  assert.equal(s.term(1), 1);
  s.append([2, 3, 4, 5].map((i) => ({ term: 2, index: i, type: EntryType.Normal, data: new Uint8Array(10) })));
  assert.equal(s.entries(2, 6, 70).length, 2, 'size-limited');
  assert.equal(s.entries(2, 6, 1).length, 1, 'at least one entry');
  s.createSnapshot(4, s.initialState().confState, new Uint8Array([1]));
  s.compact(4);
  assert.equal(s.firstIndex(), 5);
  assert.equal(s.term(4), 2);
  assert.throws(() => s.term(3), /compacted/);
  assert.throws(() => s.entries(4, 5, 100), /compacted/);
  s.append([{ term: 3, index: 5, type: EntryType.Normal, data: new Uint8Array(0) }]);
  assert.equal(s.term(5), 3, 'an append at an existing index replaces the tail');
});
