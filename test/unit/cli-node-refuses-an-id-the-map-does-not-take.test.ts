/**
 * Node ids are 1..maxNodeId, the map's own limit: `raftblock node --id 4294967296` started, then
 * asked to register for ever (the map's refusal logged at debug level only). The CLI, the node
 * and the commands naming a node now refuse such an id at once (exit 2).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { applyCommand, emptyMap, maxNodeId } from '../../src/cluster/map.js';
import { StorageNode, type NodeOptions } from '../../src/cluster/node.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tools.js';

const cli = (...args: string[]) => runCli(args, { timeoutMs: 20_000, env: { ...process.env, RAFTBLOCK_SERVER: '' } });

test('maxNodeId is the largest id the map takes', () => {
  const refusal = (id: number) => {
    const r = applyCommand(emptyMap(), { type: 'removeNode', id });
    return r.ok ? undefined : r.error.code;
  };
  assert.equal(refusal(maxNodeId), 'NOT_FOUND');
  assert.equal(refusal(maxNodeId + 1), 'INVALID_ARGUMENT');
  assert.throws(() => new StorageNode({ id: maxNodeId + 1 } as NodeOptions), (err: Error & { code?: string }) => err.code === 'INVALID_ARGUMENT' && /node: node id must be an integer in 1\.\.2147483647, got 2147483648/.test(err.message));
});

test('raftblock node refuses an id outside the map\'s range at once, and so do the commands that name a node', async (t) => {
  const dir = tempDir(t);
  const data = join(dir, 'node');
  for (const args of [
    ['node', '--id', '4294967296', '--data', data, '--bootstrap', '--peer', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0'],
    ['node', '--id', String(maxNodeId + 1), '--data', data, '--join', '127.0.0.1:1'],
    ['node-state', String(maxNodeId + 1), 'out'],
    ['node', 'remove', '4294967296'],
    ['node', 'replace', '4294967296'],
    ['pool', 'repair', 'p', '0', '--node', '4294967296'],
  ]) {
    const r = await cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, /(--id|node id|--node) must be a whole number in 1\.\.2147483647, got "(4294967296|2147483648)" \[INVALID_ARGUMENT\]/);
    assert.doesNotMatch(r.stdout, /"event":"listening"/);
  }
  assert.equal(existsSync(data), false, 'the node made its data dir');
});
