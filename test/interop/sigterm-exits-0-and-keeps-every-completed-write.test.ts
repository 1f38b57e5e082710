import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describeRun, runTool, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { pyScript, python3WithNbd } from './clients.js';

const MiB = 1024 * 1024;
const writerSlots = (32 * MiB) / 4096;
/** Stop once this many batches completed (the writer is then mid-stream). */
const stopAfterBatches = 25;

test('SIGTERM during writes exits 0 and keeps every write whose reply arrived', async (t) => {
  if (!requireTools(t, python3WithNbd)) return;
  const dir = tempDir(t);
  const image = join(dir, 'term.img');
  const seed = 1 + Math.floor(Math.random() * 1_000_000);
  t.diagnostic(`seed ${seed}`);
  const server = await startExportFile(t, { path: image, exportName: 'term', sizeBytes: 32 * MiB });

  const completed: number[][] = [];
  let finished = false;
  let stopped: Promise<number | null> | undefined;
  const w = await runTool(python3WithNbd, [pyScript('crash_writer.py'), server.uri, String(seed), String(writerSlots)], {
    timeoutMs: 120_000,
    onLine: (line) => {
      if (!line.startsWith('{')) return;
      const ev = JSON.parse(line) as { completed?: number[]; finished?: boolean };
      if (ev.finished) finished = true;
      if (ev.completed) completed.push(ev.completed);
      if (completed.length === stopAfterBatches && stopped === undefined) stopped = server.stop(15_000);
    },
  });
  assert.ok(stopped, `the writer completed only ${completed.length} batches: ${describeRun('writer', w)}`);
  assert.equal(await stopped, 0, `SIGTERM with clients writing exits 0; stderr:\n${server.stderr()}`);
  assert.ok(!finished, 'the writer was still writing when the server stopped');

  const restarted = await startExportFile(t, { path: image, exportName: 'term' });
  const verify = await runTool(python3WithNbd, [pyScript('crash_writer.py'), restarted.uri, String(seed), String(writerSlots), '--verify'], {
    input: completed.map((d) => JSON.stringify(d)).join('\n') + '\n',
    timeoutMs: 120_000,
  });
  assert.equal(verify.code, 0, `completed writes lost or blocks torn: ${describeRun('verify', verify)}`);
  t.diagnostic(verify.stdout.trim());
});
