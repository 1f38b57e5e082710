import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describeRun, runTool, startExportFile, type ExportFileServer } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { pyScript, python3WithNbd, sparseFile } from './clients.js';

const MiB = 1024 * 1024;

async function runCase(server: ExportFileServer, name: string): Promise<void> {
  const r = await runTool(python3WithNbd, [pyScript('error_cases.py'), server.host, String(server.port), server.exportName, name], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, describeRun(`error case ${name}`, r));
  assert.match(r.stdout, new RegExp(`^PASS ${name}$`, 'm'));
  assert.equal(server.proc.exitCode, null, `the server survived ${name}; stderr:\n${server.stderr()}`);
}

const writableCases: [string, string][] = [
  ['read-past-end', 'reads past the end fail with EINVAL'],
  ['trim-past-end', 'trims past the end fail with EINVAL'],
  ['block-status-past-end', 'block status past the end fails with EINVAL'],
  ['write-past-end', 'writes past the end fail with ENOSPC and change nothing'],
  ['unknown-flags', 'unknown command flags fail with EINVAL'],
  ['unknown-command', 'unknown commands fail with EINVAL and the connection goes on'],
  ['oversized-payload', 'an oversized write payload is read off before an error or a disconnect'],
  ['zero-length', 'zero-length requests do not disconnect'],
  ['bad-magic', 'bad request magic disconnects only that client'],
  ['garbage-clients', 'clients sending garbage or hanging up mid-request disturb no one'],
  ['handshake-options', 'refused options (unknown, STARTTLS, unknown export) leave the handshake going'],
];

test('NBD error cases driven by libnbd with strict mode off and a raw socket', async (t) => {
  if (!requireTools(t, python3WithNbd)) return;
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: join(dir, 'err.img'), exportName: 'errors', sizeBytes: 64 * MiB });
  for (const [name, title] of writableCases) {
    await t.test(title, async () => runCase(server, name));
  }
  const ro = await startExportFile(t, { path: sparseFile(join(dir, 'ro.img'), MiB), exportName: 'errors', readOnly: true });
  await t.test('writes, trims and zeroes on a read-only export fail with EPERM', async () => runCase(ro, 'readonly-eperm'));
  assert.equal(await server.stop(), 0, `clean exit after hostile clients; stderr:\n${server.stderr()}`);
});
