/**
 * `raftblock node --data FILE` (and `start --data FILE`) says the path is not a directory and
 * exits 2, where mkdir's EEXIST came out as a Node stack trace; RAFTBLOCK_TICK_MS must be a
 * whole number of milliseconds, where Number() made `abc` a NaN tick interval.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tools.js';

const local = ['--peer', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0'];

function refused(r: { code: number; stdout: string; stderr: string }, message: RegExp): void {
  assert.equal(r.code, 2, `exit ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace');
  assert.doesNotMatch(r.stdout, /"event":"listening"/);
}

test('raftblock node and start refuse a --data path that is a file, or lies under one, without a stack trace', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'a-file');
  writeFileSync(file, 'not a directory\n');
  refused(await runCli(['node', '--id', '1', '--data', file, '--bootstrap', ...local]), new RegExp(`--data ${file} is not a directory \\[INVALID_ARGUMENT\\]`));
  refused(await runCli(['node', '--id', '1', '--data', join(file, 'node'), '--bootstrap', ...local]), /a part of its path is a file \[INVALID_ARGUMENT\]/);
  refused(await runCli(['start', '--data', file]), new RegExp(`--data ${file} is not a directory \\[INVALID_ARGUMENT\\]`));
});

test('raftblock node refuses a RAFTBLOCK_TICK_MS that is not a positive whole number before it makes anything', async (t) => {
  const dir = tempDir(t);
  const data = join(dir, 'node');
  for (const tick of ['abc', '0', '-5', '1.5', '0x10', '60001']) {
    const r = await runCli(['node', '--id', '1', '--data', data, '--bootstrap', ...local], { env: { ...process.env, RAFTBLOCK_TICK_MS: tick } });
    refused(r, new RegExp(`RAFTBLOCK_TICK_MS must be a whole number in 1\\.\\.60000, got "${tick}"`));
  }
  assert.equal(existsSync(data), false, 'the node made its data dir');
});
