/**
 * The peer ops pgConf and pgCompact check what they are given as the other ops do: a group id
 * that is a safe integer naming a PG (at or above maxPgsPerPool), and for pgCompact an index
 * that is a non-negative safe integer. They passed both on unchecked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pgGroupArg } from '../../src/cluster/peer-request-args.js';
import { maxPgsPerPool } from '../../src/cluster/map.js';
import { InvalidArgument } from '../../src/common/errors.js';

test('a PG group id is a safe integer at or above maxPgsPerPool', () => {
  assert.equal(pgGroupArg(maxPgsPerPool, 'pgConf'), maxPgsPerPool);
  assert.equal(pgGroupArg(maxPgsPerPool * 3 + 5, 'pgCompact'), maxPgsPerPool * 3 + 5);
  for (const bad of [undefined, null, '70000', 0, -1, maxPgsPerPool - 1, 1.5, NaN, Infinity, 2 ** 53, {}, [maxPgsPerPool]]) {
    assert.throws(() => pgGroupArg(bad, 'pgCompact'), (err: unknown) => err instanceof InvalidArgument && /pgCompact: bad group id/.test((err as Error).message), String(bad));
  }
});
