/**
 * Group 0 applies a map command id once (src/cluster/meta-store.ts, ids in map.ts): a node
 * retries a command whose answer it lost (a leader change, a timeout) with the same id, the
 * retry commits as a second entry, and that entry answers what the first apply answered and
 * changes nothing. The window of remembered answers is bounded, oldest first, and replicated
 * state: it survives a checkpoint and reopen, travels in the snapshot image, and an image
 * written before ids (without it) still opens.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { addNodeCommand } from '../helpers/map.js';
import { tempDir } from '../helpers/tools.js';
import { MetaStore, RecentMetaAnswers, metaDedupeWindowCommands, type MetaAnswer } from '../../src/cluster/meta-store.js';
import {
  decodeCommand,
  decodeMetaEntry,
  emptyMap,
  encodeCommand,
  encodeMap,
  metaCommandIdFromWire,
  metaCommandKey,
  type MapCommand,
  type MetaCommandId,
  type Volume,
} from '../../src/cluster/map.js';
import { TimedOut, type RaftblockError } from '../../src/common/errors.js';
import { StorageNode } from '../../src/cluster/node.js';

const noMap = (): void => undefined;
const term = 1;
const mib = 1 << 20;

interface Answer {
  epoch: number;
  changed: boolean;
  volume?: Volume;
}

/** Feeds entries to a MetaStore at consecutive indices, as the host's apply chain does. */
class Feeder {
  constructor(readonly meta: MetaStore) {}

  async apply(cmd: MapCommand, id?: MetaCommandId): Promise<Answer> {
    return (await this.meta.apply(this.meta.appliedIndex + 1, term, encodeCommand(cmd, id))) as Answer;
  }

  /** The refusal's code (and the entry still counts as applied). */
  async refused(cmd: MapCommand, id?: MetaCommandId): Promise<RaftblockError> {
    const before = this.meta.appliedIndex;
    const err = await this.apply(cmd, id).then(
      () => assert.fail(`${cmd.type} was accepted`),
      (e: RaftblockError) => e,
    );
    assert.equal(this.meta.appliedIndex, before + 1);
    return err;
  }
}

let seq = 0;
function newId(): MetaCommandId {
  return { session: 7, seq: seq++ };
}

/** Nodes 1-3 in their own zones, pool `default` (3 replicas), volume vol0 of 1 MiB. */
async function filledStore(dir: string): Promise<Feeder> {
  const f = new Feeder(await MetaStore.open(dir, noMap));
  for (const id of [1, 2, 3]) await f.apply(addNodeCommand(id), newId());
  await f.apply({ type: 'createPool', name: 'default', replicas: 3, pgCount: 8, failureDomain: 'zone' }, newId());
  await f.apply({ type: 'createVolume', name: 'vol0', sizeBytes: mib }, newId());
  return f;
}

function mapBytes(meta: MetaStore): string {
  return Buffer.from(encodeMap(meta.map)).toString('base64');
}

test('a retried volume delete whose first attempt committed answers that success, not NOT_FOUND, and changes nothing', async (t) => {
  const f = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  const id = newId();
  const del: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const first = await f.apply(del, id);
  assert.equal(first.changed, true);
  assert.equal(first.volume?.name, 'vol0');
  const after = mapBytes(f.meta);
  // The answer was lost; the node retries with the same id and the retry commits too.
  const again = await f.apply(del, id);
  assert.deepEqual(again, first);
  assert.equal(mapBytes(f.meta), after, 'the retry changed the map');
  // Another command (another id, or none) is applied as before.
  assert.equal((await f.refused(del, newId())).code, 'NOT_FOUND');
  assert.equal((await f.refused(del)).code, 'NOT_FOUND');
});

test('a retried node removal answers its first success; the node is removed once', async (t) => {
  const f = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  await f.apply(addNodeCommand(4), newId());
  await f.apply({ type: 'setNodeState', id: 4, state: 'out' }, newId());
  const id = newId();
  const first = await f.apply({ type: 'removeNode', id: 4 }, id);
  assert.equal(first.changed, true);
  const epoch = f.meta.map.epoch;
  assert.equal(first.epoch, epoch);
  assert.deepEqual(await f.apply({ type: 'removeNode', id: 4 }, id), first);
  assert.equal(f.meta.map.epoch, epoch);
  assert.deepEqual(f.meta.map.nodes.map((n) => n.id), [1, 2, 3]);
  assert.equal((await f.refused({ type: 'removeNode', id: 4 }, newId())).code, 'NOT_FOUND');
});

test('a retried create answers the volume it created, with its epoch, even after someone else resized it', async (t) => {
  const f = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  const id = newId();
  const create: MapCommand = { type: 'createVolume', name: 'vol1', sizeBytes: 2 * mib };
  const first = await f.apply(create, id);
  assert.equal(first.changed, true);
  assert.equal(first.volume?.sizeBytes, 2 * mib);
  await f.apply({ type: 'resizeVolume', name: 'vol1', sizeBytes: 4 * mib }, newId());
  const moved = mapBytes(f.meta);
  // The map has moved on: the retry still answers what the create did, at the epoch it made.
  const again = await f.apply(create, id);
  assert.deepEqual(again, first);
  assert.ok(again.epoch < f.meta.map.epoch);
  assert.equal(mapBytes(f.meta), moved);
  // The same create under another id meets the resized volume: a conflict, as before.
  assert.equal((await f.refused(create, newId())).code, 'ALREADY_EXISTS');
});

test('a refusal is remembered too: the retry of a refused command is refused alike and applies nothing', async (t) => {
  const f = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  const id = newId();
  const del: MapCommand = { type: 'deleteVolume', name: 'vol1' };
  const first = await f.refused(del, id);
  assert.equal(first.code, 'NOT_FOUND');
  await f.apply({ type: 'createVolume', name: 'vol1', sizeBytes: mib }, newId());
  const again = await f.refused(del, id);
  assert.equal(again.code, first.code);
  assert.equal(again.message, first.message);
  assert.ok(f.meta.map.volumes.some((v) => v.name === 'vol1'), 'the retry of a refused delete deleted the volume');
});

test('the window keeps the last metaDedupeWindowCommands ids, oldest leaving first', async (t) => {
  const f = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  const oldest = newId();
  const del: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  await f.apply(del, oldest);
  const second = newId();
  await f.apply({ type: 'createVolume', name: 'vol2', sizeBytes: mib }, second);
  // Commands that change nothing still fill the window.
  for (let i = 0; i < metaDedupeWindowCommands - 1; i++) await f.apply({ type: 'setNodeState', id: 1, state: 'in' }, newId());
  assert.equal(f.meta.answers.size, metaDedupeWindowCommands);
  const keys = f.meta.answers.toImage().map(([k]) => k);
  assert.equal(keys[0], metaCommandKey(second), 'the oldest id still remembered');
  assert.ok(!keys.includes(metaCommandKey(oldest)));
  // The next oldest is still answered from the window (its first answer: created).
  assert.equal((await f.apply({ type: 'createVolume', name: 'vol2', sizeBytes: mib }, second)).changed, true);
  // The id that left the window is applied again (here: refused, the volume being gone), and
  // takes the place of the oldest.
  assert.equal((await f.refused(del, oldest)).code, 'NOT_FOUND');
  assert.equal(f.meta.answers.get(metaCommandKey(second)), undefined);
  assert.equal(f.meta.answers.size, metaDedupeWindowCommands);
});

test('RecentMetaAnswers: bounded, first in first out; an image longer than the capacity keeps its newest', () => {
  const answer = (epoch: number): MetaAnswer => ({ epoch, changed: true });
  const w = new RecentMetaAnswers(3);
  for (let k = 1; k <= 5; k++) w.remember(k, answer(k));
  assert.deepEqual(w.toImage(), [3, 4, 5].map((k) => [k, answer(k)]));
  assert.equal(w.get(2), undefined);
  // A key seen again keeps its first answer and its place.
  w.remember(4, answer(40));
  assert.deepEqual(w.get(4), answer(4));
  // Key 0 (no id) is never remembered.
  w.remember(0, answer(0));
  assert.equal(w.get(0), undefined);
  assert.equal(w.size, 3);
  const loaded = RecentMetaAnswers.fromImage([1, 2, 3, 4, 5].map((k) => [k, answer(k)]), 3);
  assert.deepEqual(loaded.toImage(), w.toImage());
  assert.equal(RecentMetaAnswers.fromImage(undefined).size, 0);
  assert.throws(() => RecentMetaAnswers.fromImage([[0, answer(1)]]), { code: 'CORRUPTION' });
  assert.throws(() => RecentMetaAnswers.fromImage({}), { code: 'CORRUPTION' });
});

test('the remembered answers survive a checkpoint and reopen: a retry after a restart is still answered from them', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-ids-');
  const f = await filledStore(dir);
  const id = newId();
  const del: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const first = await f.apply(del, id);
  const refusedId = newId();
  const refusal = await f.refused({ type: 'removeNode', id: 1 }, refusedId);
  assert.equal(await f.meta.checkpoint(), f.meta.appliedIndex);
  const reopened = new Feeder(await MetaStore.open(dir, noMap));
  assert.equal(reopened.meta.appliedIndex, f.meta.appliedIndex);
  assert.deepEqual(reopened.meta.answers.toImage(), f.meta.answers.toImage());
  assert.deepEqual(await reopened.apply(del, id), first);
  const again = await reopened.refused({ type: 'removeNode', id: 1 }, refusedId);
  assert.deepEqual([again.code, again.message], [refusal.code, refusal.message]);
  assert.equal(mapBytes(reopened.meta), mapBytes(f.meta));
});

test('a replica that installs the snapshot image (exactImage → restoreImage) dedupes as the one that made it', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-ids-');
  const f = await filledStore(join(dir, 'a'));
  const id = newId();
  const del: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const first = await f.apply(del, id);
  const index = await f.meta.checkpoint();
  const image = f.meta.exactImage(index);
  assert.ok(image, 'no image at the checkpoint index');
  const b = new Feeder(await MetaStore.open(join(dir, 'b'), noMap));
  await b.meta.prepareSnapshot(index, { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
  await b.meta.restoreImage(image, index, term);
  assert.deepEqual(b.meta.answers.toImage(), f.meta.answers.toImage());
  // The same retry entry, applied at the same index on both replicas, answers alike.
  const [onA, onB] = [await f.apply(del, id), await b.apply(del, id)];
  assert.deepEqual(onA, first);
  assert.deepEqual(onB, first);
  assert.equal(mapBytes(b.meta), mapBytes(f.meta));
  assert.deepEqual(b.meta.answers.toImage(), f.meta.answers.toImage());
  // And what it keeps on disk holds the window too.
  const reopened = await MetaStore.open(join(dir, 'b'), noMap);
  assert.deepEqual(reopened.answers.toImage(), f.meta.answers.toImage());
});

test('an image written before command ids (no answers) restores and opens with an empty window', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-ids-');
  const f = await filledStore(join(dir, 'a'));
  const packr = new Packr({ useRecords: false });
  const old = packr.pack({ index: f.meta.appliedIndex, term, map: encodeMap(f.meta.map), voters: [1] }) as Buffer;
  const b = await MetaStore.open(join(dir, 'b'), noMap);
  await b.restoreImage(old, f.meta.appliedIndex, term);
  assert.equal(b.answers.size, 0);
  assert.equal(mapBytes(b), mapBytes(f.meta));
  const reopened = await MetaStore.open(join(dir, 'b'), noMap);
  assert.equal(reopened.answers.size, 0);
  assert.equal(reopened.map.epoch, f.meta.map.epoch);
  // An empty image (group 0's bootstrap snapshot) is the empty state, window included.
  const c = await MetaStore.open(join(dir, 'c'), noMap);
  await c.restoreImage(new Uint8Array(0), 1, term);
  assert.equal(c.answers.size, 0);
  assert.deepEqual(c.map, emptyMap());
});

test('a log entry carries its command id beside the command; an entry without one is the command as before', () => {
  const cmd: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const id = { session: 3, seq: 2 ** 32 - 1 };
  const withId = decodeMetaEntry(encodeCommand(cmd, id));
  assert.deepEqual(withId.command, cmd);
  assert.equal(withId.key, 3 * 2 ** 32 + 2 ** 32 - 1);
  assert.deepEqual(decodeMetaEntry(encodeCommand(cmd)), { command: cmd, key: 0 });
  // The command alone, as a replica that reads no ids sees it.
  assert.deepEqual(decodeCommand(encodeCommand(cmd, id)), cmd);
  // A command object that brings an id field of its own does not smuggle it into the entry.
  assert.deepEqual(decodeMetaEntry(encodeCommand({ ...cmd, cid: [9, 9] } as MapCommand)), { command: cmd, key: 0 });
  // Wire ids from peers are checked.
  assert.deepEqual(metaCommandIdFromWire([1, 0]), { session: 1, seq: 0 });
  assert.equal(metaCommandIdFromWire(undefined), undefined);
  for (const bad of [[0, 1], [2 ** 20, 1], [1, -1], [1, 2 ** 32], [1], '1:2', [1.5, 2]]) {
    assert.throws(() => metaCommandIdFromWire(bad), { code: 'INVALID_ARGUMENT' }, JSON.stringify(bad));
  }
});

/**
 * StorageNode.proposeMeta against stand-ins for its host and transport (a whole node is a
 * cluster test): group 0's leader, elsewhere, applies each attempt's entry to a MetaStore, and
 * the first attempt's answer is lost (the leader commits and applies it, the request times
 * out). The retry must carry the same id and get the first answer.
 */
async function proposeThroughLossyLeader(t: TestContext, given?: MetaCommandId): Promise<{ answers: unknown[]; ids: unknown[]; leader: Feeder }> {
  const leader = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  const ids: unknown[] = [];
  let attempts = 0;
  const node = Object.create(StorageNode.prototype) as StorageNode;
  Object.assign(node, {
    id: 1,
    host: { groups: new Map() },
    metaTarget: () => 2,
    transport: {
      request: async (_to: string, op: string, args: { cmd: MapCommand; cid?: unknown }) => {
        assert.equal(op, 'meta');
        ids.push(args.cid);
        const answer = await leader.apply(args.cmd, metaCommandIdFromWire(args.cid));
        if (attempts++ === 0) throw new TimedOut('request to node 2 timed out'); // committed, answer lost
        return answer;
      },
    },
  });
  const del: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const answers = [await node.proposeMeta(del, given)];
  // A later command from this node gets a new id.
  answers.push(await node.proposeMeta({ type: 'setNodeState', id: 1, state: 'in' }));
  return { answers, ids, leader };
}

test('proposeMeta: a retry after a lost answer carries the first attempt\'s id and answers its success, not NOT_FOUND', async (t) => {
  const { answers, ids, leader } = await proposeThroughLossyLeader(t);
  assert.equal(ids.length, 3);
  assert.deepEqual(ids[1], ids[0], 'the retry carried another id');
  assert.notDeepEqual(ids[2], ids[0], 'the next command reused the id');
  const first = answers[0] as Answer;
  assert.equal(first.changed, true);
  assert.equal(first.volume?.name, 'vol0');
  assert.ok(!leader.meta.map.volumes.some((v) => v.name === 'vol0'));
});

test('proposeMeta forwards the id it is given (a forwarding node makes none of its own)', async (t) => {
  const given = { session: 99, seq: 5 };
  const { ids } = await proposeThroughLossyLeader(t, given);
  assert.deepEqual(ids.slice(0, 2), [[99, 5], [99, 5]]);
});

/**
 * `node remove` retried above proposeMeta: a node forwards the whole removal to group 0's
 * leader (StorageNode.atMetaLeader), and the forwarded request's answer is lost after the
 * leader removed the node. The retry goes to the leader again under the same id and must be
 * answered with that removal, not refused NOT_FOUND by the leader's own check that the node
 * is in the map. Both nodes are stand-ins around the real StorageNode methods.
 */
test('node remove: a retry after a lost answer is answered with the removal its first attempt made, not NOT_FOUND', async (t) => {
  const feeder = await filledStore(tempDir(t, 'raftblock-meta-ids-'));
  await feeder.apply(addNodeCommand(4), newId());
  await feeder.apply({ type: 'setNodeState', id: 4, state: 'out' }, newId());
  assert.ok(feeder.meta.map.pools.every((p) => p.pgs.every((pg) => !pg.replicas.includes(4))), 'node 4 holds no PG in the map');
  const quiet = { info: noMap, warn: noMap, debug: noMap, error: noMap };
  // Group 0's leader (node 2): its Raft group is a stand-in; its map commands apply to the real store.
  const leader = Object.create(StorageNode.prototype) as StorageNode;
  Object.assign(leader, {
    id: 2,
    meta: feeder.meta,
    log: quiet,
    removed: false,
    map: () => feeder.meta.map,
    groupsNamingEverywhere: async () => [],
    spreadMap: async () => undefined,
    host: {
      groups: new Map([[0, { id: 0, isLeader: true, lead: 2, raft: { confStateAt: () => ({ voters: [1, 2, 3], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false }) } }]]),
      propose: async (_g: number, data: Uint8Array) => feeder.meta.apply(feeder.meta.appliedIndex + 1, term, data),
    },
    transport: { isConnected: () => false },
  });
  // The node asked (node 1), which forwards to the leader; the first answer is lost.
  const ids: unknown[] = [];
  const asked = Object.create(StorageNode.prototype) as StorageNode;
  Object.assign(asked, {
    id: 1,
    log: quiet,
    removed: false,
    metaTarget: () => 2,
    map: () => feeder.meta.map,
    host: { groups: new Map() },
    transport: {
      request: async (_to: string, op: string, args: { id: number; cid?: unknown }) => {
        assert.equal(op, 'removeNode');
        ids.push(args.cid);
        const answer = await (leader as unknown as { removeNodeAsLeader(id: number, cid?: MetaCommandId): Promise<unknown> }).removeNodeAsLeader(args.id, metaCommandIdFromWire(args.cid));
        if (ids.length === 1) throw new TimedOut('request to node 2 timed out'); // removed, answer lost
        return answer;
      },
    },
  });
  const epochBefore = feeder.meta.map.epoch;
  const answer = (await asked.removeNode(4)) as { nodeId: number; epoch: number };
  assert.equal(ids.length, 2);
  assert.deepEqual(ids[1], ids[0], 'the retry carried another id');
  assert.equal(answer.nodeId, 4);
  assert.equal(answer.epoch, epochBefore + 1, 'the answer is the removal’s epoch');
  assert.ok(!feeder.meta.map.nodes.some((n) => n.id === 4), 'node 4 is removed');
  assert.equal(feeder.meta.map.epoch, epochBefore + 1, 'removed once');
  // A new removal of the same node (another id) is refused as before.
  await assert.rejects(asked.removeNode(4), { code: 'NOT_FOUND' });
});

test('an id with a fingerprint (an Idempotency-Key) sent again with another request is refused, applies nothing, and keeps its first answer', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-ids-');
  const f = await filledStore(dir);
  const key = newId();
  const asked = { ...key, fingerprint: 0xabc };
  const first = await f.apply({ type: 'createVolume', name: 'vol1', sizeBytes: mib }, asked);
  assert.equal(first.changed, true);
  const before = mapBytes(f.meta);
  // The same key with another body: another fingerprint.
  const reused = await f.refused({ type: 'createVolume', name: 'vol2', sizeBytes: mib }, { ...key, fingerprint: 0xdef });
  assert.equal(reused.code, 'IDEMPOTENCY_KEY_REUSED');
  assert.equal(mapBytes(f.meta), before, 'the reused key created a volume');
  assert.throws(() => f.meta.answerOf({ ...key, fingerprint: 0xdef }), { code: 'IDEMPOTENCY_KEY_REUSED' });
  // The key's own request is still answered as it was, and so is a node's retry (no fingerprint).
  assert.deepEqual(await f.apply({ type: 'createVolume', name: 'vol1', sizeBytes: mib }, asked), first);
  assert.deepEqual(f.meta.answerOf(asked), first);
  assert.deepEqual(f.meta.answerOf(key), first);
  // The fingerprint is replicated state: it survives a checkpoint and reopen.
  await f.meta.checkpoint();
  const reopened = new Feeder(await MetaStore.open(dir, noMap));
  assert.equal((await reopened.refused({ type: 'createVolume', name: 'vol2', sizeBytes: mib }, { ...key, fingerprint: 0xdef })).code, 'IDEMPOTENCY_KEY_REUSED');
  assert.throws(() => RecentMetaAnswers.fromImage([[1, { epoch: 1, changed: true, fingerprint: 'x' }]]), { code: 'CORRUPTION' });
});

test('a log entry carries the fingerprint beside the id; an entry without one decodes as before', () => {
  const cmd: MapCommand = { type: 'deleteVolume', name: 'vol0' };
  const id = { session: 9, seq: 4, fingerprint: 2 ** 48 - 1 };
  const entry = decodeMetaEntry(encodeCommand(cmd, id));
  assert.deepEqual(entry, { command: cmd, key: metaCommandKey(id), fingerprint: id.fingerprint });
  assert.deepEqual(decodeMetaEntry(encodeCommand(cmd, { session: 9, seq: 4 })), { command: cmd, key: metaCommandKey(id) });
  const packr = new Packr({ useRecords: false });
  for (const cfp of [-1, 2 ** 48, 1.5, 'x']) {
    assert.throws(() => decodeMetaEntry(packr.pack({ ...cmd, cid: [9, 4], cfp })), { code: 'INVALID_ARGUMENT' }, String(cfp));
  }
});
