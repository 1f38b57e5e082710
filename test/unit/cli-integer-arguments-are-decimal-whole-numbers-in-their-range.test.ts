/**
 * Every integer argument of the CLI is read by one parser (parseInteger): decimal digits alone,
 * in the flag's range, else a clear error naming the flag and the range (exit 2, nothing
 * started). Number() took `0x10` and `1e1`, and `start` gave its last nodes ports past 65535.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseInteger } from '../../src/common/address.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tools.js';

const cli = (...args: string[]) => runCli(args, { timeoutMs: 20_000, env: { ...process.env, RAFTBLOCK_SERVER: '' } });

test('parseInteger takes decimal digits in its range alone, and names the flag and the range otherwise', () => {
  assert.equal(parseInteger('10', '--n', 1, 64), 10);
  assert.equal(parseInteger(' 7 ', '--n', 1, 64), 7);
  assert.equal(parseInteger('0', '--n', 0, 1), 0);
  assert.equal(parseInteger('007', '--n', 1, 64), 7);
  for (const bad of ['0x10', '1e1', '0b1', '0o7', '', ' ', '-1', '+3', '1.5', '1.0', 'ten', 'Infinity', '65', '0']) {
    assert.throws(() => parseInteger(bad, '--n', 1, 64), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.equal(err.message, `--n must be a whole number in 1..64, got ${JSON.stringify(bad)}`);
      return true;
    });
  }
  assert.throws(() => parseInteger('9007199254740993', '--count', 1, Number.MAX_SAFE_INTEGER), /--count must be a whole number of at least 1, got "9007199254740993"/);
});

test('the commands refuse an integer argument that is not a decimal whole number in range, before they start anything', async (t) => {
  const dir = tempDir(t);
  const cases: [string[], RegExp][] = [
    [['node', '--id', '0x10', '--data', join(dir, 'node'), '--bootstrap'], /--id must be a whole number/],
    [['node', '--id', '1e1', '--data', join(dir, 'node'), '--bootstrap'], /--id must be a whole number/],
    [['node-state', '1e1', 'out'], /node id must be a whole number/],
    [['node', 'remove', '0x2'], /node id must be a whole number/],
    [['start', '--data', join(dir, 'start'), '--nodes', '0x3'], /--nodes must be a whole number in 1\.\.64, got "0x3"/],
    [['start', '--data', join(dir, 'start'), '--pg-count', '1e1'], /--pg-count must be a whole number in 1\.\.65536, got "1e1"/],
    [['start', '--data', join(dir, 'start'), '--http-port', '0x2a00'], /--http-port must be a whole number in 1\.\.65535, got "0x2a00"/],
    [['start', '--data', join(dir, 'start'), '--nbd-port', '65534'], /--nbd-port must be 1\.\.65533 with 3 nodes .*got 65534/],
    [['start', '--data', join(dir, 'start'), '--nodes', '5', '--peer-port', '65532'], /--peer-port must be 1\.\.65531 with 5 nodes/],
    [['pool', 'create', 'p', '--replicas', '3', '--pgs', '1e1'], /--pgs must be a whole number in 1\.\.65536, got "1e1"/],
    [['sim', '--seeds', '0x5'], /--seeds must be a whole number of at least 0, got "0x5"/],
    // A cluster of no node would fail every seed, reported as the simulator's failures.
    [['sim', '--seeds', '1', '--nodes', '0'], /--nodes must be a whole number in 1\.\.9, got "0"/],
    [['sim', '--seeds', '1', '--nodes', '10'], /--nodes must be a whole number in 1\.\.9, got "10"/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.match(r.stderr, /\[INVALID_ARGUMENT\]/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace');
  }
  assert.equal(existsSync(join(dir, 'node')), false, 'a node made its data dir');
  assert.equal(existsSync(join(dir, 'start', 'node-1')), false, 'start started a node');
});
