/**
 * Group 0's leader's judgement of a PG reset (src/cluster/pg-reset-check.ts) from what every
 * node of the map says it holds of the PG: refused while any node holds state of it, a member
 * the map no longer names included (a move that had not finished), and while any node that
 * may hold it cannot be asked, unless that node is being replaced (its data dir declared lost).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { pgResetRefusal, type HoldingAnswer, type ReplicaHolding } from '../../src/cluster/pg-reset-check.js';
import { emptyMap, type AddNodeCommand, type ClusterMap } from '../../src/cluster/map.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';

/**
 * Nodes 1..5 in zones of their own, pool `one` (one replica, 8 PGs); `pg` is a PG on node 2,
 * which was replaced since and whose new data dir has registered.
 */
function lostPgMap(): { map: ClusterMap; pg: number } {
  let map = applyAll(emptyMap(), ...[1, 2, 3, 4, 5].map((id) => addNodeCommand(id)), { type: 'createPool', name: 'one', replicas: 1, pgCount: 8, failureDomain: 'zone' });
  const pg = map.pools[0].pgs.findIndex((p) => p.replicas[0] === 2);
  assert.ok(pg >= 0, 'no PG on node 2');
  map = applyAll(map, { type: 'replaceNode', id: 2 }, { ...(addNodeCommand(2) as AddNodeCommand), incarnation: 'abcdef0123456789' });
  assert.ok(!map.nodes.find((n) => n.id === 2)!.replacing, 'node 2 registered again');
  return { map, pg };
}

const holds = (h: ReplicaHolding): HoldingAnswer => ({ holding: h });
const silent = (why = 'UNAVAILABLE: node 4 cannot be dialed now'): HoldingAnswer => ({ unanswered: why });

function answers(over: Record<number, HoldingAnswer>, base: HoldingAnswer = holds('none')): Map<number, HoldingAnswer> {
  const m = new Map<number, HoldingAnswer>();
  for (const id of [1, 2, 3, 4, 5]) m.set(id, over[id] ?? base);
  return m;
}

test('a PG whose replica holds nothing but a rebuild waiting, and no node anything of it, may be reset', () => {
  const { map, pg } = lostPgMap();
  assert.equal(pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held') })), undefined);
  assert.equal(pgResetRefusal(map, map.pools[0], pg, answers({})), undefined);
  // A node the map does not place it on, held for a rebuild with an empty log: no data, no vote.
  assert.equal(pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held'), 4: holds('held') })), undefined);
});

test('a node the map no longer names that still runs the PG refuses the reset, named as such', () => {
  const { map, pg } = lostPgMap();
  const r = pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held'), 4: holds('state') }));
  assert.equal(r?.code, 'PG_NOT_LOST');
  assert.match(r!.message, new RegExp(`^PG one/${pg}: node 4 holds state of it though the map places the PG elsewhere \\(a move away from it has not finished`));
  // A replica that holds state is named as one.
  const replica = pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('state') }));
  assert.equal(replica?.code, 'PG_NOT_LOST');
  assert.match(replica!.message, /node 2 holds state of it \(never lost, or rebuilt since\)/);
});

test('a node that cannot be asked refuses the reset with PG_LOSS_UNCONFIRMED naming it and why, whatever its state in the map', () => {
  const { map, pg } = lostPgMap();
  const r = pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held'), 4: silent() }));
  assert.equal(r?.code, 'PG_LOSS_UNCONFIRMED');
  assert.match(r!.message, /node 4 could not be asked what it holds of it \(UNAVAILABLE: node 4 cannot be dialed now\)/);
  assert.match(r!.message, /start it, or replace it/);
  // A node of the map left out of the answers counts as not asked.
  const missing = answers({ 2: holds('held') });
  missing.delete(5);
  assert.match(pgResetRefusal(map, map.pools[0], pg, missing)?.message ?? '', /node 5 could not be asked what it holds of it \(not asked\)/);
  // Marked out (draining): a move away from it may not have finished, so it may hold the PG.
  const drained = applyAll(map, { type: 'setNodeState', id: 4, state: 'out' });
  assert.equal(pgResetRefusal(drained, drained.pools[0], pg, answers({ 2: holds('held'), 4: silent() }))?.code, 'PG_LOSS_UNCONFIRMED');
  // Every silent node is named.
  assert.match(pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held'), 3: silent('TIMED_OUT'), 5: silent() }))?.message ?? '', /node 3 could not be asked.*TIMED_OUT.*; node 5 could not be asked/);
});

test('a node being replaced (its data dir declared lost, none registered since) may be silent', () => {
  const { map, pg } = lostPgMap();
  const replacing = applyAll(map, { type: 'replaceNode', id: 4 });
  assert.equal(pgResetRefusal(replacing, replacing.pools[0], pg, answers({ 2: holds('held'), 4: silent() })), undefined);
  // The PG's own replica being replaced again: nothing under its id holds the PG either.
  const again = applyAll(map, { type: 'replaceNode', id: 2 });
  assert.equal(pgResetRefusal(again, again.pools[0], pg, answers({ 2: silent() })), undefined);
  // But one that answers that it holds state is believed.
  assert.equal(pgResetRefusal(replacing, replacing.pools[0], pg, answers({ 2: holds('held'), 4: holds('state') }))?.code, 'PG_NOT_LOST');
});

test('a definite refusal comes before a node that could not be asked: state held, then the map\'s rule', () => {
  const { map, pg } = lostPgMap();
  assert.equal(pgResetRefusal(map, map.pools[0], pg, answers({ 2: holds('held'), 3: holds('state'), 4: silent() }))?.code, 'PG_NOT_LOST');
  // A PG whose replica was never replaced: the map's rule, not the silent node.
  const kept = map.pools[0].pgs.findIndex((p) => p.replicas[0] === 3);
  assert.ok(kept >= 0, 'no PG on node 3');
  const r = pgResetRefusal(map, map.pools[0], kept, answers({ 4: silent() }));
  assert.equal(r?.code, 'PG_NOT_LOST');
  assert.match(r!.message, /node 3 may still hold its data \(not replaced since the PG was placed there\)/);
});

test('the reset is allowed exactly when no node holds state and every silent node is being replaced', () => {
  const { map: base, pg } = lostPgMap();
  const answer = fc.oneof(fc.constantFrom<HoldingAnswer>(holds('held'), holds('none'), holds('state'), silent()), fc.constant(undefined));
  fc.assert(
    fc.property(fc.tuple(answer, answer, answer, answer, answer), fc.subarray([1, 3, 4, 5]), (given, replaced) => {
      const map = replaced.length ? applyAll(base, ...replaced.map((id) => ({ type: 'replaceNode' as const, id }))) : base;
      const m = new Map<number, HoldingAnswer>();
      given.forEach((a, i) => a && m.set(i + 1, a));
      const r = pgResetRefusal(map, map.pools[0], pg, m);
      const anyState = given.some((a) => a !== undefined && 'holding' in a && a.holding === 'state');
      const silentNotReplacing = given.some((a, i) => (a === undefined || 'unanswered' in a) && !map.nodes.find((n) => n.id === i + 1)!.replacing);
      assert.equal(r === undefined, !anyState && !silentNotReplacing, `${JSON.stringify(given)} replaced ${replaced}: ${r?.message}`);
      if (anyState) assert.equal(r?.code, 'PG_NOT_LOST');
      else if (silentNotReplacing) assert.equal(r?.code, 'PG_LOSS_UNCONFIRMED');
    }),
  );
});
