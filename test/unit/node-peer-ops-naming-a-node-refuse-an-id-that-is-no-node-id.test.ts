/**
 * The peer ops that name a node (removeNode, replaceNode, groupsNaming, pingNode), the admin
 * commands and a node's own options refuse an id that is no node id with one check, whose
 * message names what asked and echoes only a number. removeNode and replaceNode passed junk on
 * to the admin check, whose refusal then showed it ("got [object Object]"); groupsNaming took
 * negative ids and answered "no groups"; pingNode took ids past the largest a map holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeIdArg } from '../../src/cluster/peer-request-args.js';
import { maxNodeId } from '../../src/cluster/map.js';
import { InvalidArgument } from '../../src/common/errors.js';

test('a node id a peer names is a safe integer in 1..maxNodeId', () => {
  assert.equal(nodeIdArg(1, 'removeNode'), 1);
  assert.equal(nodeIdArg(maxNodeId, 'groupsNaming'), maxNodeId);
  for (const op of ['removeNode', 'replaceNode', 'groupsNaming', 'pingNode']) {
    for (const bad of [undefined, null, '3', 0, -1, maxNodeId + 1, 2.5, NaN, Infinity, 2 ** 53, {}, [3], true]) {
      assert.throws(
        () => nodeIdArg(bad, op),
        (err: unknown) => err instanceof InvalidArgument && (err as Error).message.startsWith(`${op}: node id must be an integer in 1..${maxNodeId}, got `),
        `${op} ${String(bad)}`,
      );
    }
  }
});

test('the refusal echoes a number, and names anything else by its type', () => {
  const message = (bad: unknown): string => {
    try {
      nodeIdArg(bad, 'node remove');
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error(`${String(bad)} was taken`);
  };
  assert.equal(message(0), `node remove: node id must be an integer in 1..${maxNodeId}, got 0`);
  assert.equal(message(2.5), `node remove: node id must be an integer in 1..${maxNodeId}, got 2.5`);
  assert.equal(message({ toString: () => 'x' }), `node remove: node id must be an integer in 1..${maxNodeId}, got a value of type object`);
  assert.equal(message(null), `node remove: node id must be an integer in 1..${maxNodeId}, got a value of type null`);
  assert.equal(message('7'), `node remove: node id must be an integer in 1..${maxNodeId}, got a value of type string`);
});
