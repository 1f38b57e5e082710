/**
 * StoreOpsLevels (store-ops-levels.ts): the proposal gate judges a write past 256 TiB by the
 * level each replica's node last told, remembered across this node's restart, so a node down
 * since then does not cost the write; a new replica (a move) is judged only by levels heard since
 * the start, since a remembered one may be stale and a move can wait; a shrink pings the nodes not
 * heard since the start before it judges.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { StoreOpsLevels, type PeerLevelSource } from '../../src/cluster/store-ops-levels.js';
import { createLogger } from '../../src/common/log.js';
import { UpgradeRequired } from '../../src/common/errors.js';
import { pgGroupId, type ClusterMap, type Volume } from '../../src/cluster/map.js';
import { encodeRange, OpKind, StoreOpsLevel, storeOpsLevel } from '../../src/store/ops.js';
import { peerLevelsFileName } from '../../src/cluster/peer-levels-file.js';
import type { PgRequest } from '../../src/gateway/volume-backend.js';
import { EntryType, type ConfState, type MsgApp } from '../../src/raft/types.js';
import { addNodeCommand, applyAll, zonedMap } from '../helpers/map.js';

const TiB = 2 ** 40;

/** Peers' levels: `remembered` from before the start, `heard` since (which also count as remembered). */
function peers(remembered: Record<number, number>, heard: Record<number, number>, pinged: number[]): PeerLevelSource {
  return {
    storeOpsLevelOf: (id) => heard[Number(id)] ?? remembered[Number(id)],
    storeOpsLevelHeardOf: (id) => heard[Number(id)],
    ping: async (id) => {
      pinged.push(Number(id));
      return true;
    },
    forgetStoreOpsLevel: (id) => {
      delete heard[Number(id)];
      delete remembered[Number(id)];
    },
  };
}

async function tempDataDir(t: import('node:test').TestContext): Promise<string> {
  const dataDir = await mkdtemp(join('/var/tmp', 'raftblock-store-ops-levels-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  return dataDir;
}

/** Node 1's gates, on `dataDir`, with `map()` as its map and `source` as its transport. */
function levelsIn(dataDir: string, source: PeerLevelSource, map: () => ClusterMap): StoreOpsLevels {
  return new StoreOpsLevels({ selfId: 1, ownLevel: storeOpsLevel, dataDir, registry: new Registry(), log: createLogger('test'), map, peers: () => source, imageMayReachFar: async () => false });
}

async function levels(t: import('node:test').TestContext, source: PeerLevelSource): Promise<StoreOpsLevels> {
  const map = zonedMap(3, 1);
  return levelsIn(await tempDataDir(t), source, () => map);
}

const conf: ConfState = { voters: [1, 2, 3], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false };
const raft = { confStateAt: (): ConfState => conf };
const farWrite: PgRequest = { k: 'write', v: 1, o: 300 * TiB, d: Buffer.alloc(4096), s: 1, q: 1 };
const nearWrite: PgRequest = { k: 'write', v: 1, o: 17 * TiB, d: Buffer.alloc(4096), s: 1, q: 2 };
const group = pgGroupId(1, 0);

test('a write past 256 TiB is judged by remembered levels; a node never heard from refuses it', async (t) => {
  const pinged: number[] = [];
  // Node 3 is down since this node restarted: remembered at this build's level.
  const gate = await levels(t, peers({ 3: storeOpsLevel }, { 2: storeOpsLevel }, pinged));
  gate.requireForRequest(group, raft, farWrite);
  // Remembered at level 1 (rolled back before this node restarted): refused, naming it.
  const older = await levels(t, peers({ 3: 1 }, { 2: storeOpsLevel }, pinged));
  assert.throws(
    () => older.requireForRequest(group, raft, farWrite),
    (err: unknown) => err instanceof UpgradeRequired && /node 3 runs a build that applies store commands up to level 1, and a command past 256 TiB needs level 2/.test((err as Error).message),
  );
  older.requireForRequest(group, raft, nearWrite);
  // Never heard from at all: unknown, refused.
  const unknown = await levels(t, peers({}, { 2: storeOpsLevel }, pinged));
  assert.throws(
    () => unknown.requireForRequest(group, raft, farWrite),
    (err: unknown) => err instanceof UpgradeRequired && /node 3 has never been heard from by node 1 \(its build is unknown\)/.test((err as Error).message),
  );
  assert.deepEqual(pinged, [], 'the write path asks nobody');
});

test('a move is judged by levels heard since the start; a remembered one does not let a learner in', async (t) => {
  const gate = await levels(t, peers({ 3: storeOpsLevel }, { 2: storeOpsLevel }, []));
  assert.equal(gate.levelOf(3), storeOpsLevel);
  assert.equal(gate.levelHeardOf(3), undefined);
  assert.equal(gate.levelHeardOf(1), storeOpsLevel, 'this node knows its own');
  assert.equal(gate.refusal([2, 3], StoreOpsLevel.FarOffsets, 'adding a replica'), undefined, 'by remembered levels');
  assert.match(
    gate.refusal([2, 3], StoreOpsLevel.FarOffsets, 'adding a replica', { after: 'it goes on by itself', heardSinceStart: true }) ?? '',
    /^node 3 has not been heard from since node 1 started \(its build is unknown\), and adding a replica needs level 2: upgrade \(or start\) node 3, it goes on by itself$/,
  );
});

test('a shrink pings the replicas not heard since the start, then judges', async (t) => {
  const pinged: number[] = [];
  const heard: Record<number, number> = { 2: storeOpsLevel };
  const source = peers({ 3: storeOpsLevel }, heard, pinged);
  // Node 3 answers the ping as a node rolled back to level 1.
  source.ping = async (id) => {
    pinged.push(Number(id));
    heard[Number(id)] = 1;
    return true;
  };
  const gate = await levels(t, source);
  const volume = { name: 'vol0', pool: 'default' } as Volume;
  await assert.rejects(
    gate.requireDiscardEverywhere(volume, 1000),
    (err: unknown) => err instanceof UpgradeRequired && /node 3 runs a build that applies store commands up to level 1.*; the volume is unchanged$/.test((err as Error).message),
  );
  assert.deepEqual(pinged, [3], 'only the node not heard since the start is asked');
  heard[3] = storeOpsLevel;
  await gate.requireDiscardEverywhere(volume, 1000);
});

test("the peers' levels follow the map: those of nodes it no longer lists are forgotten, in memory and in the file; those of nodes it lists are saved", async (t) => {
  const dataDir = await tempDataDir(t);
  // Saved before this start: nodes 2 and 3 (in the map) and 9 (removed while this node was down).
  await writeFile(join(dataDir, peerLevelsFileName), JSON.stringify({ levels: { '2': storeOpsLevel, '3': storeOpsLevel, '9': 1 } }));
  const remembered: Record<number, number> = { 2: storeOpsLevel, 3: storeOpsLevel, 9: 1 };
  // Heard since: node 2, node 8 (not in the map: joining, or removed and still talking).
  const heard: Record<number, number> = { 2: storeOpsLevel, 8: 1 };
  let map = zonedMap(3, 1);
  const gate = levelsIn(dataDir, peers(remembered, heard, []), () => map);
  assert.deepEqual([...(await gate.remembered())].sort(), [['2', storeOpsLevel], ['3', storeOpsLevel], ['9', 1]]);
  const saved = async (): Promise<Record<string, number>> => {
    await gate.settled();
    return (JSON.parse(await readFile(join(dataDir, peerLevelsFileName), 'utf8')) as { levels: Record<string, number> }).levels;
  };
  gate.told('8', 1);
  assert.deepEqual(await saved(), { '2': storeOpsLevel, '3': storeOpsLevel, '9': 1 }, 'a node the map does not list is not saved');
  // Appends cut for nodes 2, 8 and 9 in this pool's PG, and for node 2 in a PG of a pool gone.
  const far = encodeRange(OpKind.Zero, 1, 300 * TiB, 4096, { session: 1, seq: 1 });
  const app = (to: number): MsgApp => ({ type: 'app', from: 1, to, term: 2, seq: 1, tick: 1, index: 10, logTerm: 2, entries: [{ term: 2, index: 11, type: EntryType.Normal, data: far }], commit: 10 });
  for (const to of [2, 8, 9]) gate.gateMessage(group, app(to), 1);
  gate.gateMessage(pgGroupId(7, 0), app(2), 1);
  assert.equal(gate.heldBackPairs, 4);

  gate.followMap(map);
  assert.equal(gate.levelOf(9), undefined, 'node 9 forgotten');
  assert.equal(gate.levelOf(3), storeOpsLevel, 'a member remembered only: kept');
  assert.equal(gate.levelHeardOf(2), storeOpsLevel, 'a member heard since the start: kept');
  assert.equal(gate.levelOf(8), 1, 'node 8, never saved, is left to the transport');
  assert.deepEqual(await saved(), { '2': storeOpsLevel, '3': storeOpsLevel });
  assert.equal(gate.heldBackPairs, 1, 'only node 2 in a PG of this map is kept');

  // Node 8 joins: the next map lists it, and its level (told before) is saved.
  map = applyAll(map, addNodeCommand(8));
  gate.followMap(map);
  assert.deepEqual(await saved(), { '2': storeOpsLevel, '3': storeOpsLevel, '8': 1 });
});
