import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, runTool, runToolOk, startExportFile } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/** qemu-io prints failures on stdout and still exits 0 for some of them: check both. */
async function qemuIo(uri: string, cmds: string[]): Promise<string> {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  args.push(uri);
  const r = await runTool('qemu-io', args, { timeoutMs: 60_000 });
  const out = r.stdout + r.stderr;
  assert.equal(r.code, 0, describeRun('qemu-io', r));
  assert.doesNotMatch(out, /Pattern verification failed|failed:|error/i, describeRun(`qemu-io ${cmds.join('; ')}`, r));
  return out;
}

test('qemu-img convert and compare round-trip an image through the export', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = tempDir(t);
  const source = join(dir, 'source.raw');
  const data = Buffer.alloc(16 * MiB);
  randomFillSync(data, 0, 6 * MiB); // the tail stays zero
  randomFillSync(data, 10 * MiB, 2 * MiB);
  writeFileSync(source, data);
  const server = await startExportFile(t, { path: join(dir, 'export.img'), exportName: 'qemu', sizeBytes: data.length });

  const info = await runToolOk('qemu-img', ['info', '--output=json', server.uri]);
  assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], data.length);

  await runToolOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, server.uri], { timeoutMs: 60_000 });
  await runToolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, server.uri], { timeoutMs: 60_000 });
  const back = join(dir, 'back.raw');
  await runToolOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', server.uri, back], { timeoutMs: 60_000 });
  await runToolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, back]);

  // A changed byte must make compare fail (the comparison can fail).
  await qemuIo(server.uri, ['write -P 0x01 4096 512']);
  const differs = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, server.uri]);
  assert.equal(differs.code, 1, describeRun('qemu-img compare after a change', differs));
});

test('qemu-io patterns, zero writes, discards, flushes and FUA writes read back as written', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: join(dir, 'export.img'), exportName: 'qio', sizeBytes: 8 * MiB });

  await qemuIo(server.uri, [
    'write -P 0xab 0 1M',
    'write -P 0xcd 1M 64k',
    'write -f -P 0xef 2M 4k', // FUA
    'flush',
    'read -P 0xab 0 1M',
    'read -P 0xcd 1M 64k',
    'read -P 0xef 2M 4k',
    'read -P 0 3M 1M', // never written
    'write -z 64k 64k',
    'read -P 0 64k 64k',
    'read -P 0xab 0 64k',
    'read -P 0xab 128k 64k',
    'write -z -u 256k 128k', // zero, may unmap
    'read -P 0 256k 128k',
    'discard 512k 256k',
    'flush',
  ]);
  // Discarded data reads back as zeros or as the old data, never as anything else.
  const afterDiscard = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0 512k 256k', server.uri]);
  const stillOld = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 512k 256k', server.uri]);
  const zeroOk = !/Pattern verification failed/.test(afterDiscard.stdout + afterDiscard.stderr);
  const oldOk = !/Pattern verification failed/.test(stillOld.stdout + stillOld.stderr);
  assert.ok(zeroOk || oldOk, `discarded range is neither zero nor the old data:\n${afterDiscard.stdout}\n${stillOld.stdout}`);

  // A fresh connection (a different process) sees everything acknowledged above.
  await qemuIo(server.uri, ['read -P 0xcd 1M 64k', 'read -P 0xef 2M 4k', 'read -P 0 64k 64k']);

  // The pattern check can fail.
  const wrong = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 1M 64k', server.uri]);
  assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/);
});
