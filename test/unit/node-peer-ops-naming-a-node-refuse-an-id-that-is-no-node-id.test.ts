/**
 * The peer ops that name a node (removeNode, replaceNode, groupsNaming, pingNode) refuse an id
 * that is no node id with a message naming the op. removeNode and replaceNode passed junk on
 * to the admin check, whose refusal then showed it ("got [object Object]"); groupsNaming took
 * negative ids and answered "no groups"; pingNode took ids past the largest a map holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeIdArg } from '../../src/cluster/node.js';
import { maxNodeId } from '../../src/cluster/map.js';
import { InvalidArgument } from '../../src/common/errors.js';

test('a node id a peer names is a safe integer in 1..maxNodeId', () => {
  assert.equal(nodeIdArg(1, 'removeNode'), 1);
  assert.equal(nodeIdArg(maxNodeId, 'groupsNaming'), maxNodeId);
  for (const op of ['removeNode', 'replaceNode', 'groupsNaming', 'pingNode']) {
    for (const bad of [undefined, null, '3', 0, -1, maxNodeId + 1, 2.5, NaN, Infinity, 2 ** 53, {}, [3], true]) {
      assert.throws(
        () => nodeIdArg(bad, op),
        (err: unknown) => err instanceof InvalidArgument && (err as Error).message === `${op}: bad node id`,
        `${op} ${String(bad)}`,
      );
    }
  }
});
