/**
 * The successor a PG leader hands its leadership to when it must give it up (before its
 * replica is rebuilt, or when the map no longer wants it): the most caught-up voter that is
 * replicating, recently active and eligible by the caller's conditions; never itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mostCaughtUpSuccessor } from '../../src/cluster/successor.js';
import type { ProgressStatus } from '../../src/raft/index.js';

type Pr = Pick<ProgressStatus, 'match' | 'state' | 'recentActive'>;
const up = (match: number): Pr => ({ match, state: 'replicate', recentActive: true });

test('the most caught-up voter is chosen, never the leader itself', () => {
  const progress = new Map<number, Pr>([
    [1, up(100)],
    [2, up(90)],
    [3, up(95)],
  ]);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters: [1, 2, 3], progress, eligible: () => true }), 3);
  assert.equal(mostCaughtUpSuccessor({ self: 3, voters: [3, 2, 1], progress, eligible: () => true }), 1);
});

test('a voter that is probing, silent, without progress or not eligible is passed over', () => {
  const progress = new Map<number, Pr>([
    [1, up(100)],
    [2, { match: 99, state: 'probe', recentActive: true }],
    [3, { match: 99, state: 'replicate', recentActive: false }],
    [4, up(50)],
    [6, up(98)],
  ]);
  const voters = [1, 2, 3, 4, 5, 6];
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters, progress, eligible: () => true }), 6);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters, progress, eligible: (v) => v !== 6 }), 4);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters, progress, eligible: (v) => v === 2 || v === 3 || v === 5 }), 0);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters: [1], progress, eligible: () => true }), 0);
});

test('among equals the lowest id wins, whatever order the voters are listed in', () => {
  const progress = new Map<number, Pr>([
    [1, up(10)],
    [2, up(7)],
    [3, up(7)],
  ]);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters: [3, 2, 1], progress, eligible: () => true }), 2);
  assert.equal(mostCaughtUpSuccessor({ self: 1, voters: [1, 2, 3], progress, eligible: () => true }), 2);
});

test('property: the choice is an eligible, active, replicating voter other than self with the highest match, or 0 if none is', () => {
  const voterArb = fc.record({ match: fc.nat(20), replicating: fc.boolean(), active: fc.boolean(), eligible: fc.boolean() });
  fc.assert(
    fc.property(fc.array(voterArb, { minLength: 1, maxLength: 7 }), fc.nat(6), (vs, selfIdx) => {
      const voters = vs.map((_, i) => i + 1);
      const self = (selfIdx % vs.length) + 1;
      const progress = new Map<number, Pr>(vs.map((v, i) => [i + 1, { match: v.match, state: v.replicating ? 'replicate' : 'probe', recentActive: v.active }]));
      const fit = voters.filter((id) => id !== self && vs[id - 1].replicating && vs[id - 1].active && vs[id - 1].eligible);
      const got = mostCaughtUpSuccessor({ self, voters: [...voters].reverse(), progress, eligible: (id) => vs[id - 1].eligible });
      if (fit.length === 0) return got === 0;
      const bestMatch = Math.max(...fit.map((id) => vs[id - 1].match));
      return got === Math.min(...fit.filter((id) => vs[id - 1].match === bestMatch));
    }),
  );
});
