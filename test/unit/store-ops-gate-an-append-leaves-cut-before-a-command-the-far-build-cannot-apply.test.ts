/**
 * The send-time store command gate: an append leaves for a replica cut before its first entry
 * the replica's build cannot apply (ops.ts StoreOpsLevel), and as it is for a replica of this
 * build. On the wire, a gated connection carries no Raft message before the far end's first
 * frame told its level, and every message leaves judged by the level that connection told: a
 * node restarted on an earlier build is judged by its new life.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type Frame } from '../../src/cluster/frame.js';
import { cutToStoreOpsLevel, HeldBackTally } from '../../src/cluster/store-ops-gate.js';
import { Transport, type TransportOptions } from '../../src/cluster/transport.js';
import { ProtocolError } from '../../src/common/errors.js';
import { EntryType, type Entry, type Message, type MsgApp } from '../../src/raft/types.js';
import { encodeDiscardFrom, encodeRange, encodeWrite, OpKind, StoreOpsLevel, storeOpsLevel } from '../../src/store/ops.js';
import { encodeConfChange } from '../../src/raft/confchange.js';
import { listen } from '../helpers/sockets.js';
import { until } from '../helpers/until.js';

const TiB = 2 ** 40;
const B = 4096;
const id = { session: 1, seq: 1 };

function append(datas: { type?: EntryType; data: Uint8Array }[]): MsgApp {
  const entries: Entry[] = datas.map((d, i) => ({ term: 2, index: 11 + i, type: d.type ?? EntryType.Normal, data: d.data }));
  return { type: 'app', from: 1, to: 3, term: 2, seq: 5, tick: 9, index: 10, logTerm: 2, entries, commit: 14 };
}

const near = encodeWrite(1, 17 * TiB, Buffer.alloc(B), id);
const far = encodeRange(OpKind.Zero, 1, 300 * TiB, B, id);
const discard = encodeDiscardFrom(1, 2 ** 30, id);
const noop = new Uint8Array(0);
const conf = encodeConfChange({ changes: [{ type: 'addVoter', nodeId: 4 }] });

test('an append is cut before its first command above the far level, and left whole when there is none', () => {
  const msg = append([{ data: near }, { data: noop }, { type: EntryType.ConfChange, data: conf }, { data: far }, { data: near }, { data: discard }]);
  const entriesBefore = [...msg.entries];
  const level1 = cutToStoreOpsLevel(msg, StoreOpsLevel.Base) as MsgApp;
  assert.deepEqual(
    level1.entries.map((e) => e.index),
    [11, 12, 13],
    'a level-1 replica takes the near write, the no-op and the membership change, up to the far zero',
  );
  assert.deepEqual({ ...level1, entries: [] }, { ...msg, entries: [] }, 'everything but the entries as it was (commit too: the follower bounds it by its last entry)');
  const level2 = cutToStoreOpsLevel(msg, StoreOpsLevel.FarOffsets) as MsgApp;
  assert.deepEqual(
    level2.entries.map((e) => e.index),
    [11, 12, 13, 14, 15],
    'a level-2 replica takes the far zero too, up to the discard',
  );
  assert.equal(cutToStoreOpsLevel(msg, storeOpsLevel), msg, "this build's level: the message itself");
  assert.equal(msg.entries.length, entriesBefore.length, 'the message queued is never changed');
  msg.entries.forEach((e, i) => assert.equal(e, entriesBefore[i]));
  const allNear = append([{ data: near }, { data: noop }]);
  assert.equal(cutToStoreOpsLevel(allNear, StoreOpsLevel.Base), allNear, 'nothing to cut: the message itself');
  const firstFar = cutToStoreOpsLevel(append([{ data: far }, { data: near }]), StoreOpsLevel.Base) as MsgApp;
  assert.deepEqual(firstFar.entries, [], 'cut to an empty append (a probe), which still carries the commit index');
  const heartbeat: Message = { type: 'heartbeat', from: 1, to: 3, term: 2, seq: 1, tick: 1, commit: 3 };
  assert.equal(cutToStoreOpsLevel(heartbeat, StoreOpsLevel.Base), heartbeat, 'other messages pass as they are');
});

test('the held-back tally counts each entry cut once per replica, however often it is resent', () => {
  const tally = new HeldBackTally();
  const msg = append([{ data: near }, { data: far }, { data: near }]);
  const cut = cutToStoreOpsLevel(msg, StoreOpsLevel.Base) as MsgApp;
  assert.equal(tally.count(7, msg, cut), 2, 'entries 12 and 13 held back from node 3 in group 7');
  assert.equal(tally.count(7, msg, cut), 0, 'the same append resent: nothing new');
  const longer = append([{ data: near }, { data: far }, { data: near }, { data: near }]);
  assert.equal(tally.count(7, longer, cutToStoreOpsLevel(longer, StoreOpsLevel.Base) as MsgApp), 1, 'resent with one more entry: only entry 14 is new');
  assert.equal(tally.count(8, msg, cut), 2, 'another group of the same replica counts apart');
  const toNode4: MsgApp = { ...msg, to: 4 };
  assert.equal(tally.count(7, toNode4, cutToStoreOpsLevel(toNode4, StoreOpsLevel.Base) as MsgApp), 2, 'another replica of the same group counts apart');
  assert.equal(tally.pairs, 3);
  // Node 4 removed, group 8's pool deleted: their pairs go; what is left still counts once.
  tally.keepOnly({ peer: (p) => p !== 4, group: (g) => g !== 8 });
  assert.equal(tally.pairs, 1);
  assert.equal(tally.count(7, longer, cutToStoreOpsLevel(longer, StoreOpsLevel.Base) as MsgApp), 0, 'node 3 in group 7: still counted');
  assert.equal(tally.count(8, msg, cut), 2, 'a pair dropped counts afresh');
});

/** A hand-made peer node 2: the frames it receives, and a way to answer on its connection. */
async function handPeer(t: import('node:test').TestContext): Promise<{ address: string; frames: Frame[]; socket: () => Socket | undefined }> {
  const frames: Frame[] = [];
  let socket: Socket | undefined;
  const { address } = await listen(t, (s) => {
    socket = s;
    const d = new FrameDecoder();
    s.on('data', (b: Buffer) => frames.push(...d.push(b)));
  });
  return { address, frames, socket: () => socket };
}

/** Node 1's transport of this build's level, its Raft messages passed through `gate`. */
async function gatedTransport(t: import('node:test').TestContext, gate: NonNullable<TransportOptions['gateMessage']>, more: Partial<TransportOptions> = {}): Promise<Transport> {
  const tr = new Transport({
    ...more,
    nodeId: '1',
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    storeOpsLevel,
    gateMessage: gate,
    handlers: {
      onMessages: () => undefined,
      onRequest: async () => {
        throw new ProtocolError('unknown op');
      },
    },
  });
  await tr.start();
  t.after(() => tr.close());
  return tr;
}

test('a gated connection carries no Raft message before the far end told its level, then each judged by that level', async (t) => {
  const gated: { group: number; level: number }[] = [];
  const tr = await gatedTransport(t, (group, msg, level) => {
    gated.push({ group, level });
    return level < storeOpsLevel ? { ...(msg as object), cut: level } : msg;
  });
  const peer = await handPeer(t);
  tr.setPeerAddress('2', peer.address);
  tr.send('2', 7, { type: 'heartbeat', n: 1 });
  await until(() => peer.frames.length > 0);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(peer.frames[0].from, '1', 'the dial introduces node 1');
  assert.equal(peer.frames[0].s, storeOpsLevel, 'and tells its level');
  assert.ok(
    peer.frames.every((f) => f.msgs === undefined),
    'no Raft message before node 2 said anything on the connection',
  );
  assert.deepEqual(gated, []);
  // Node 2 answers as a node of level 1 (an earlier build): the held message leaves, judged by it.
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1, s: 1 }));
  await until(() => peer.frames.some((f) => f.msgs !== undefined));
  const first = peer.frames.find((f) => f.msgs !== undefined)!;
  assert.deepEqual(first.msgs, [{ g: 7, m: { type: 'heartbeat', n: 1, cut: 1 } }]);
  assert.deepEqual(gated, [{ group: 7, level: 1 }]);
  assert.equal(tr.storeOpsLevelOf('2'), 1);
  // Later messages on the same connection leave at once, judged the same way.
  tr.send('2', 8, { type: 'app', n: 2 });
  await until(() => peer.frames.filter((f) => f.msgs !== undefined).length === 2);
  assert.deepEqual(gated, [
    { group: 7, level: 1 },
    { group: 8, level: 1 },
  ]);
});

test("a peer's new connection is judged by what it tells there, not by its previous connection's level", async (t) => {
  const levels: number[] = [];
  const tr = await gatedTransport(t, (_group, msg, level) => {
    levels.push(level);
    return msg;
  });
  const peer = await handPeer(t);
  tr.setPeerAddress('2', peer.address);
  tr.send('2', 7, { n: 1 });
  await until(() => peer.socket() !== undefined && peer.frames.length > 0);
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1, s: storeOpsLevel }));
  await until(() => levels.length === 1);
  // Node 2 restarts on an earlier build: its old connection closes; the next message waits for
  // the new connection's first frame, which tells no level at all (a build before levels: 1).
  const old = peer.socket()!;
  peer.frames.length = 0;
  old.destroy();
  await until(() => !tr.isConnected('2'));
  tr.send('2', 7, { n: 2 });
  await until(() => peer.socket() !== old && peer.frames.length > 0);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(levels.length, 1, 'nothing sent on the new connection before it told its level');
  assert.equal(tr.storeOpsLevelOf('2'), storeOpsLevel, 'the last level told is kept while the peer is away (the proposal gate uses it)');
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1 }));
  await until(() => levels.length === 2);
  assert.deepEqual(levels, [storeOpsLevel, 1]);
  assert.equal(tr.storeOpsLevelOf('2'), 1);
});

test('a level remembered from before the start serves the proposal gate, not the connection: that still waits for what the peer tells', async (t) => {
  const levels: number[] = [];
  const told: [string, number][] = [];
  const tr = await gatedTransport(
    t,
    (_group, msg, level) => {
      levels.push(level);
      return msg;
    },
    { knownStoreOpsLevels: new Map([['2', storeOpsLevel], ['5', 1]]), onStoreOpsLevel: (id, level) => told.push([id, level]) },
  );
  assert.equal(tr.storeOpsLevelOf('5'), 1, 'remembered');
  tr.forgetStoreOpsLevel('5');
  assert.equal(tr.storeOpsLevelOf('5'), undefined, 'forgotten (node 5 removed)');
  assert.equal(tr.storeOpsLevelOf('2'), storeOpsLevel, 'remembered');
  assert.equal(tr.storeOpsLevelHeardOf('2'), undefined, 'but not heard in this life');
  const peer = await handPeer(t);
  tr.setPeerAddress('2', peer.address);
  tr.send('2', 7, { n: 1 });
  await until(() => peer.frames.length > 0);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(levels, [], 'nothing leaves on the remembered level');
  // Node 2 was rolled back meanwhile: it tells level 1.
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1, s: 1 }));
  await until(() => levels.length === 1);
  assert.deepEqual(levels, [1]);
  assert.equal(tr.storeOpsLevelOf('2'), 1);
  assert.equal(tr.storeOpsLevelHeardOf('2'), 1);
  assert.deepEqual(told, [['2', 1]], 'the change is told once, to be remembered');
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1, s: 1 }));
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(told, [['2', 1]], 'the same level again is no news');
  // Forgotten while its connection lives (a node the map did not list yet): its next frame is
  // news, and tells its level again, heard since the start.
  tr.forgetStoreOpsLevel('2');
  assert.equal(tr.storeOpsLevelOf('2'), undefined);
  assert.equal(tr.storeOpsLevelHeardOf('2'), undefined);
  peer.socket()!.write(encodeFrame({ from: '2', addr: '', epoch: 1, s: 1 }));
  await until(() => tr.storeOpsLevelHeardOf('2') === 1);
  assert.equal(tr.storeOpsLevelOf('2'), 1);
  assert.deepEqual(told, [['2', 1], ['2', 1]], 'told again, to be remembered again');
});
