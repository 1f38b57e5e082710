/**
 * The map's side of down-out: group 0's leader marks a node out with `auto` (the node gets
 * autoOut) and in again only while autoOut stands; an operator's choice made meanwhile wins and
 * clears the claim.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyCommand, checkMap, decodeMap, encodeMap, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';
import { addNodeCommand, applyAll, zonedMap } from '../helpers/map.js';

function node(map: ClusterMap, id: number) {
  const n = map.nodes.find((x) => x.id === id);
  assert.ok(n, `node ${id} in the map`);
  return n;
}

function holds(map: ClusterMap, id: number): number {
  return map.pools[0].pgs.filter((pg) => pg.replicas.includes(id)).length;
}

/** The command applies and changes nothing (the epoch stays). */
function unchanged(map: ClusterMap, c: MapCommand): boolean {
  const r = applyCommand(map, c);
  assert.ok(r.ok, JSON.stringify(r));
  return !r.changed && r.map.epoch === map.epoch;
}

const autoOut = (id: number): MapCommand => ({ type: 'setNodeState', id, state: 'out', auto: true });
const autoIn = (id: number): MapCommand => ({ type: 'setNodeState', id, state: 'in', auto: true });
const operator = (id: number, state: 'in' | 'out'): MapCommand => ({ type: 'setNodeState', id, state });

test('an automatic out moves the PGs off the node and marks it autoOut; the automatic in undoes both', () => {
  const map = zonedMap(4, 16);
  assert.ok(holds(map, 4) > 0);
  const out = applyAll(map, autoOut(4));
  assert.equal(node(out, 4).state, 'out');
  assert.equal(node(out, 4).autoOut, true);
  assert.equal(holds(out, 4), 0, 'the node holds no PG once out');
  assert.equal(out.epoch, map.epoch + 1);
  const back = applyAll(out, autoIn(4));
  assert.equal(node(back, 4).state, 'in');
  assert.equal(node(back, 4).autoOut, undefined);
  assert.deepEqual(back.pools[0].pgs.map((pg) => pg.replicas), map.pools[0].pgs.map((pg) => pg.replicas), 'placement is what it was');
  // autoOut survives the map's codec (group 0's snapshots).
  assert.deepEqual(decodeMap(encodeMap(out)), out);
});

test("an operator's choice stands against the leader's: automatic changes apply only to what the rule itself did", () => {
  const map = zonedMap(4, 16);
  // Marked out by an operator (draining): an automatic in leaves it out, an automatic out changes nothing.
  const drained = applyAll(map, operator(4, 'out'));
  for (const c of [autoIn(4), autoOut(4)]) {
    assert.equal(unchanged(drained, c), true, `${JSON.stringify(c)} changed an operator's out`);
  }
  // An operator marks out a node the rule marked out: it stays out, now the operator's.
  const auto = applyAll(map, autoOut(4));
  const owned = applyAll(auto, operator(4, 'out'));
  assert.equal(node(owned, 4).state, 'out');
  assert.equal(node(owned, 4).autoOut, undefined);
  assert.deepEqual(owned.pools, auto.pools, 'no PG moves');
  assert.equal(unchanged(owned, autoIn(4)), true, 'the automatic in leaves it out');
  // An operator marks it in: in, and no claim left.
  const inAgain = applyAll(auto, operator(4, 'in'));
  assert.equal(node(inAgain, 4).state, 'in');
  assert.equal(node(inAgain, 4).autoOut, undefined);
  // An automatic out of a node already marked out by the rule changes nothing.
  assert.equal(unchanged(auto, autoOut(4)), true);
});

test('a node marked out by the rule that registers again stays out and autoOut until the rule marks it in', () => {
  const auto = applyAll(zonedMap(4, 16), autoOut(4));
  const reRegister = addNodeCommand(4);
  assert.ok(reRegister.type === 'addNode');
  const moved = applyAll(auto, { ...reRegister, addresses: { peer: '127.0.0.1:30004', nbd: '127.0.0.1:31004', http: '127.0.0.1:32004' } });
  assert.equal(node(moved, 4).state, 'out');
  assert.equal(node(moved, 4).autoOut, true);
  assert.equal(node(moved, 4).addresses.peer, '127.0.0.1:30004');
});

test('bad input: auto other than true is refused; autoOut on a node that is in breaks the map, and is dropped from a map read from a peer', () => {
  const map = zonedMap(4, 8);
  const r = applyCommand(map, { type: 'setNodeState', id: 4, state: 'out', auto: 'yes' as unknown as true });
  assert.ok(!r.ok && r.error.code === 'INVALID_ARGUMENT', JSON.stringify(r));
  const broken: ClusterMap = { ...map, nodes: map.nodes.map((n) => (n.id === 4 ? { ...n, autoOut: true as const } : n)) };
  assert.throws(() => checkMap(broken), /autoOut on a node that is not out/);
  // A map from a node of an older version, which kept the flag through an operator's in:
  // read without it, not refused.
  const fromOlder = decodeMap(encodeMap(broken));
  assert.equal(fromOlder.nodes.find((n) => n.id === 4)?.autoOut, undefined);
  assert.equal(fromOlder.nodes.find((n) => n.id === 4)?.state, 'in');
  // The rule's out that placement cannot take is refused like an operator's.
  const three = zonedMap(3, 8);
  const refused = applyCommand(three, autoOut(3));
  assert.ok(!refused.ok && refused.error.code === 'PLACEMENT_IMPOSSIBLE');
});
