/**
 * `raftblock pool reset-pg` on group 0's leader (StorageNode.resetPgAsLeader) asks every node
 * of the map what it holds of the PG, not only the replicas the map lists: a PG whose move had
 * not finished still runs, maybe led, on members the map no longer names, and a reset would
 * start a second group under its id beside them. A node that cannot be asked refuses the reset
 * (PG_LOSS_UNCONFIRMED, naming it) unless it is being replaced. The leader is a stand-in around
 * the real StorageNode methods; its peers answer through a stand-in transport.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StorageNode } from '../../src/cluster/node.js';
import { emptyMap, pgGroupId, type AddNodeCommand, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';
import { Unavailable } from '../../src/common/errors.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';

const quiet = { info: () => undefined, warn: () => undefined, debug: () => undefined, error: () => undefined };

/** Nodes 1..4, pool `one` of one replica; `pg` lies on node 2, replaced since (its new data dir registered). */
function lostPgMap(): { map: ClusterMap; pg: number } {
  let map = applyAll(emptyMap(), ...[1, 2, 3, 4].map((id) => addNodeCommand(id)), { type: 'createPool', name: 'one', replicas: 1, pgCount: 8, failureDomain: 'zone' });
  const pg = map.pools[0].pgs.findIndex((p) => p.replicas[0] === 2);
  assert.ok(pg >= 0, 'no PG on node 2');
  map = applyAll(map, { type: 'replaceNode', id: 2 }, { ...(addNodeCommand(2) as AddNodeCommand), incarnation: 'abcdef0123456789' });
  return { map, pg };
}

/**
 * Group 0's leader (node 1) over `map`, whose peers answer `pgReplicaState` of PG `pg` from `peers`
 * (an Error is thrown as the request's failure). Returns the leader, the nodes asked and the
 * map commands proposed.
 */
function leaderOver(map: ClusterMap, pg: number, peers: Record<number, string | Error>): { leader: StorageNode; asked: number[]; proposed: MapCommand[] } {
  const asked: number[] = [];
  const proposed: MapCommand[] = [];
  const leader = Object.create(StorageNode.prototype) as StorageNode;
  Object.assign(leader, {
    id: 1,
    log: quiet,
    meta: { answerOf: () => undefined },
    map: () => map,
    host: { groups: new Map([[0, { id: 0, isLeader: true, lead: 1 }]]) },
    pgMover: { replicaState: async () => 'none' },
    transport: {
      request: async (to: string, op: string, args: { g: number }) => {
        assert.equal(op, 'pgReplicaState');
        assert.equal(args.g, pgGroupId(map.pools[0].id, pg));
        asked.push(Number(to));
        const a = peers[Number(to)];
        if (a instanceof Error) throw a;
        return a;
      },
    },
    proposeMeta: async (cmd: MapCommand) => {
      proposed.push(cmd);
      return { epoch: map.epoch + 1 };
    },
    spreadMap: async () => undefined,
  });
  return { leader, asked, proposed };
}

function reset(leader: StorageNode, pg: number): Promise<unknown> {
  return (leader as unknown as { resetPgAsLeader(pool: string, pg: number, cid: { session: number; seq: number }): Promise<unknown> }).resetPgAsLeader('one', pg, { session: 1, seq: 1 });
}

test('a node the map no longer places the PG on but that still runs it refuses the reset', async () => {
  const { map, pg } = lostPgMap();
  // Node 2, the map's replica, waits for a rebuild; node 3 still runs the PG (its move away had not finished).
  const { leader, asked, proposed } = leaderOver(map, pg, { 2: 'held', 3: 'state', 4: 'none' });
  await assert.rejects(reset(leader, pg), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'PG_NOT_LOST');
    assert.match(err.message, /node 3 holds state of it though the map places the PG elsewhere/);
    return true;
  });
  assert.deepEqual([...asked].sort(), [2, 3, 4], 'every other node of the map was asked');
  assert.deepEqual(proposed, [], 'nothing proposed');
});

test('a node of the map that cannot be asked refuses the reset, named; once it is being replaced, the reset goes on', async () => {
  const { map, pg } = lostPgMap();
  const down = leaderOver(map, pg, { 2: 'held', 3: 'none', 4: new Unavailable('node 4 cannot be dialed now') });
  await assert.rejects(reset(down.leader, pg), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'PG_LOSS_UNCONFIRMED');
    assert.match(err.message, /node 4 could not be asked what it holds of it \(UNAVAILABLE: node 4 cannot be dialed now\)/);
    return true;
  });
  assert.deepEqual(down.proposed, []);
  // An answer that is none of the three is no answer.
  const odd = leaderOver(map, pg, { 2: 'held', 3: 'none', 4: 'maybe' });
  await assert.rejects(reset(odd.leader, pg), { code: 'PG_LOSS_UNCONFIRMED', message: /node 4 could not be asked.*"maybe"/ });
  // The operator declares node 4's data dir lost: its silence no longer stops the reset.
  const replaced = applyAll(map, { type: 'replaceNode', id: 4 });
  const ok = leaderOver(replaced, pg, { 2: 'held', 3: 'none', 4: new Unavailable('node 4 cannot be dialed now') });
  assert.deepEqual(await reset(ok.leader, pg), { epoch: replaced.epoch + 1 });
  assert.deepEqual(ok.proposed, [{ type: 'resetPg', pool: 'one', pg }]);
});
