/**
 * removeNode in the map's apply (src/cluster/map.ts): only a node marked out that no PG lists
 * leaves the map; removing it again is NOT_FOUND; the placement of the other PGs does not move;
 * a member's old data dir (addNode with `member`) is refused once its id was removed, while a
 * new node (a new data dir) may take the id again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addNodeCommand, applyAll, zonedMap } from '../helpers/map.js';
import { applyCommand, removeNodeRefusal, type ApplyResult, type ClusterMap } from '../../src/cluster/map.js';
import { NodeHoldsReplicas, type RaftblockError } from '../../src/common/errors.js';

function refused(r: ApplyResult, code: string, message?: RegExp): RaftblockError {
  assert.equal(r.ok, false, 'command was accepted');
  if (r.ok) throw new Error('unreachable');
  assert.equal(r.error.code, code, r.error.message);
  if (message) assert.match(r.error.message, message);
  return r.error;
}

test('a node that is in, or still listed by a PG, is not removed; the map and its epoch stay', () => {
  const map = zonedMap(4, 16);
  refused(applyCommand(map, { type: 'removeNode', id: 4 }), 'NODE_STILL_IN', /node 4 is in: mark it out first/);
  refused(applyCommand(map, { type: 'removeNode', id: 9 }), 'NOT_FOUND', /node 9 is not in the map/);
  refused(applyCommand(map, { type: 'removeNode', id: 0 }), 'INVALID_ARGUMENT');
  // A map in which an out node is still listed (as none that placement produces, but the rule
  // does not rely on that): the PGs are named.
  const held: ClusterMap = {
    ...map,
    nodes: map.nodes.map((n) => (n.id === 4 ? { ...n, state: 'out' as const } : n)),
  };
  const listing = held.pools[0].pgs.flatMap((pg, i) => (pg.replicas.includes(4) ? [i] : []));
  assert.ok(listing.length > 0, 'node 4 holds no PG in a 4-node map');
  const err = removeNodeRefusal(held, 4);
  assert.ok(err instanceof NodeHoldsReplicas, String(err));
  assert.equal(err.code, 'NODE_HOLDS_REPLICAS');
  assert.equal(err.groups.length, listing.length);
  assert.match(err.message, new RegExp(`node 4 still holds replicas of PGs default/${listing[0]}, `));
  assert.match(err.message, /wait until `raftblock status` shows them moved/);
});

test('a node marked out leaves the map: its PGs moved at the out, none move at the removal; again is NOT_FOUND', () => {
  const map = zonedMap(4, 16);
  const out = applyAll(map, { type: 'setNodeState', id: 3, state: 'out' });
  assert.ok(out.pools[0].pgs.every((pg) => !pg.replicas.includes(3)));
  assert.equal(removeNodeRefusal(out, 3), undefined);
  const r = applyCommand(out, { type: 'removeNode', id: 3 });
  assert.ok(r.ok, r.ok ? '' : r.error.message);
  if (!r.ok) return;
  assert.equal(r.map.epoch, out.epoch + 1);
  assert.deepEqual(r.map.nodes.map((n) => n.id), [1, 2, 4]);
  assert.deepEqual(r.movedGroups, [], 'removing a drained node moved PGs');
  assert.deepEqual(r.map.pools, out.pools);
  refused(applyCommand(r.map, { type: 'removeNode', id: 3 }), 'NOT_FOUND');
});

test("a removed member's old data dir is refused (NODE_REMOVED); a new node takes the id", () => {
  const map = applyAll(zonedMap(4, 8), { type: 'setNodeState', id: 4, state: 'out' }, { type: 'removeNode', id: 4 });
  // The old node, whose own map listed it, re-registers: refused.
  refused(applyCommand(map, { ...addNodeCommand(4), member: true } as never), 'NODE_REMOVED', /node 4 was removed from the cluster map/);
  // A member still in the map re-registers with the flag as before.
  const again = applyCommand(map, { ...addNodeCommand(2), member: true } as never);
  assert.ok(again.ok && !again.changed, 'a member re-registering changed the map');
  // A new data dir (the join of a node without the cluster id) takes the id, marked in.
  const joined = applyAll(map, { ...addNodeCommand(4), newNode: true } as never);
  assert.deepEqual(joined.nodes.find((n) => n.id === 4)?.state, 'in');
  assert.ok(joined.pools[0].pgs.some((pg) => pg.replicas.includes(4)), 'the new node 4 holds no PG');
});
