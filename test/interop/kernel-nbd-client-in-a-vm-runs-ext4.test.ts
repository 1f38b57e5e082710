import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { runKernelNbdClientVm, vmHostTools } from '../helpers/vm.js';

const MiB = 1024 * 1024;

test('the Linux kernel NBD client in a VM (2 connections) makes, fills, remounts and fscks ext4 on the export', async (t) => {
  if (!requireTools(t, ...vmHostTools)) return;
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: join(dir, 'vm.img'), exportName: 'vmdisk', sizeBytes: 64 * MiB });
  const r = await runKernelNbdClientVm({ port: server.port, exportName: server.exportName, connections: 2, timeoutMs: 240_000 });
  t.diagnostic(`VM ${r.verdict} in ${r.elapsedMs} ms`);
  const tail = r.consoleLog.length > 12_000 ? '…' + r.consoleLog.slice(-12_000) : r.consoleLog;
  assert.equal(r.verdict, 'pass', `VM verdict ${r.verdict} (${r.marker ?? 'no marker'}); console:\n${tail}`);
  assert.equal(server.proc.exitCode, null, `server still running; stderr:\n${server.stderr()}`);
});
