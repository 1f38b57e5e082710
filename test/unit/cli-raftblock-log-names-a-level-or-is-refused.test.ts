/**
 * RAFTBLOCK_LOG names the log level in any case (debug, info, warn, error), and anything else is
 * refused before the command runs, as every other setting is: a typo used to leave the level
 * at info without a word.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { InvalidArgument } from '../../src/common/errors.js';
import { parseLogLevel } from '../../src/common/log.js';
import { runCli } from '../helpers/cli.js';
import { cliPath } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';

test('a level in any case is taken; empty or absent is the default; anything else is refused', () => {
  assert.equal(parseLogLevel('WARN'), 'warn');
  assert.equal(parseLogLevel('debug'), 'debug');
  assert.equal(parseLogLevel('Error'), 'error');
  assert.equal(parseLogLevel(''), undefined);
  assert.equal(parseLogLevel(undefined), undefined);
  for (const bad of ['shout', 'warning', 'constructor', 'toString', ' info']) {
    assert.throws(() => parseLogLevel(bad), (err: unknown) => err instanceof InvalidArgument && /RAFTBLOCK_LOG must be debug, info, warn or error/.test(err.message), bad);
  }
});

test('the command refuses a RAFTBLOCK_LOG that names no level, and runs with one that does', async () => {
  const refused = await runCli(['volume', 'list', '--server', '127.0.0.1:1'], { env: { ...process.env, RAFTBLOCK_LOG: 'shout' } });
  assert.equal(refused.code, 2);
  assert.equal(refused.stderr, 'raftblock: RAFTBLOCK_LOG must be debug, info, warn or error, got "shout" [INVALID_ARGUMENT]\n');
  const ran = await runCli(['volume', 'list', '--server', '127.0.0.1:1'], { env: { ...process.env, RAFTBLOCK_LOG: 'Error' } });
  assert.match(ran.stderr, /cannot reach raftblock node at 127\.0\.0\.1:1/);
});

/** The stderr lines of `raftblock export-file` under `env` until it listens, then it is stopped. */
async function exportFileLog(file: string, level: string): Promise<string> {
  const child = spawn(process.execPath, [cliPath, 'export-file', file, '--name', 'x', '--size', '1M', '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RAFTBLOCK_LOG: level },
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.startsWith('{"event":"listening"')) break;
  }
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  return stderr;
}

test('the level set is the level logged', async (t) => {
  const dir = tempDir(t);
  assert.match(await exportFileLog(join(dir, 'a.img'), 'info'), /"level":"info"/);
  assert.doesNotMatch(await exportFileLog(join(dir, 'b.img'), 'WARN'), /"level":"info"/);
});
