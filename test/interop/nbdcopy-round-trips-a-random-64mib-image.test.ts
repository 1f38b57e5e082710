import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { openSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, runTool, runToolOk, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const imageBytes = 64 * MiB;

/** Random data with a few zero runs, so copies exercise both data and sparse paths. */
function writeRandomImage(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(MiB);
  for (let i = 0; i < imageBytes / MiB; i++) {
    if (i % 7 === 3) chunk.fill(0);
    else randomFillSync(chunk);
    writeSync(fd, chunk, 0, MiB, i * MiB);
  }
  closeSync(fd);
}

test('nbdcopy copies a random 64 MiB image in and out unchanged', async (t) => {
  if (!requireTools(t, 'nbdcopy', 'cmp')) return;
  const dir = tempDir(t);
  const source = join(dir, 'source.raw');
  const back = join(dir, 'back.raw');
  writeRandomImage(source);
  const server = await startExportFile(t, { path: join(dir, 'export.img'), exportName: 'copy', sizeBytes: imageBytes });

  await runToolOk('nbdcopy', ['--flush', source, server.uri], { timeoutMs: 120_000 });
  await runToolOk('nbdcopy', [server.uri, back], { timeoutMs: 120_000 });
  const cmp = await runTool('cmp', [source, back]);
  assert.equal(cmp.code, 0, describeRun('cmp', cmp));

  // Again over a fresh connection set after a restart of the server: the data is in the file.
  assert.equal(await server.stop(), 0);
  const again = await startExportFile(t, { path: join(dir, 'export.img'), exportName: 'copy' });
  const back2 = join(dir, 'back2.raw');
  await runToolOk('nbdcopy', ['--connections=2', again.uri, back2], { timeoutMs: 120_000 });
  const cmp2 = await runTool('cmp', [source, back2]);
  assert.equal(cmp2.code, 0, describeRun('cmp after restart', cmp2));
});
