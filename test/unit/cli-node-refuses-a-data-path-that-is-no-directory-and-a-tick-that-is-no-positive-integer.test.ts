/**
 * `raftblock node --data FILE` (and `start --data FILE`) says the path is not a directory and
 * exits 2, where mkdir's EEXIST came out as a Node stack trace; RAFTBLOCK_TICK_MS must be a
 * whole number of milliseconds, where Number() made `abc` a NaN tick interval. A directory mkdir
 * cannot make though its parent exists (under /proc) is refused at once: Node's recursive mkdir
 * retried it forever.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tools.js';
import { makeDataDir } from '../../src/cli/data-dir.js';

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
  const dangling = join(dir, 'dangling');
  symlinkSync(join(dir, 'nowhere', 'at-all'), dangling);
  refused(await runCli(['node', '--id', '1', '--data', dangling, '--bootstrap', ...local]), new RegExp(`--data ${dangling} is not a directory \\[INVALID_ARGUMENT\\]`));
});

test('raftblock node and start refuse at once a --data directory that cannot be made though its parent exists', async () => {
  // procfs answers mkdir with ENOENT under an existing /proc: Node's recursive mkdir looped.
  const proc = '/proc/raftblock-no-such-dir/data';
  for (const args of [['node', '--id', '1', '--data', proc, '--bootstrap', ...local], ['start', '--data', proc]]) {
    refused(await runCli(args, { timeoutMs: 15_000 }), /--data \/proc\/raftblock-no-such-dir\/data: cannot make the directory: ENOENT/);
  }
});

test('a --data directory is made with every missing parent, and an existing one is taken as it is', (t) => {
  const dir = tempDir(t);
  const nested = join(dir, 'a', 'b', 'c');
  makeDataDir(nested);
  assert.ok(statSync(nested).isDirectory());
  makeDataDir(nested);
  makeDataDir(`${join(dir, 'a')}/./b/../b/c/`);
  assert.ok(statSync(nested).isDirectory());
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
