/**
 * The cluster tests' client runner returns everything its child wrote. A child's 'exit' may
 * come before the last of its stdout has been read (Node documents that its stdio may still be
 * open then); a Jepsen history cut there loses its last operations, and a final read of a tag
 * written by a lost operation looks like a read of a value nobody wrote.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { runProcess } from '../cluster/io.js';

test('runProcess keeps the output that arrives after the child has exited', async () => {
  // The shell exits at once; its background job still holds stdout and writes 300 ms later,
  // as a child's last chunk can still be in the pipe when its exit is seen.
  const proc = spawn('sh', ['-c', '(sleep 0.3; echo late; echo late-err >&2) & echo early'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const r = await runProcess(proc);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'early\nlate\n');
  assert.equal(r.stderr, 'late-err\n');
});
