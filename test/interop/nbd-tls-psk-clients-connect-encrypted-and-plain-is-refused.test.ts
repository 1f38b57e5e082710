/**
 * NBD over TLS with pre-shared keys (`export-file --tls-psk`): libnbd's nbdinfo and nbdcopy
 * and qemu's tls-creds-psk connect, upgrade with NBD_OPT_STARTTLS and move data; what crosses
 * the wire (seen through a recording proxy) holds neither the data nor the export's name. A
 * client without TLS, with the wrong key or an unknown user gets nothing, and the server keeps
 * serving the right ones. SIGHUP re-reads the key file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeRun, runTool, runToolOk, startExportFile } from '../helpers/nbd-server.js';
import { recordingProxy } from '../helpers/recording-proxy.js';
import { requireTools, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

test('NBD over TLS-PSK: nbdinfo, qemu-io and nbdcopy work encrypted; plain, wrong-key and unknown-user clients are refused', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdinfo', 'nbdcopy', 'qemu-io', 'cmp')) return;
  const dir = tempDir(t);
  const keys = join(dir, 'keys.psk');
  writeFileSync(keys, `# users of this export\nalice:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const wrong = join(dir, 'wrong.psk');
  writeFileSync(wrong, `alice:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  // qemu reads DIR/keys.psk of a tls-creds-psk object.
  const qemuDir = join(dir, 'qemu');
  await runToolOk('mkdir', ['-p', qemuDir]);
  await runToolOk('cp', [keys, join(qemuDir, 'keys.psk')]);
  const exportName = `secret-export-${randomBytes(6).toString('hex')}`;
  const server = await startExportFile(t, { path: join(dir, 'export.img'), exportName, sizeBytes: 16 * MiB, tlsPskFile: keys });
  const proxy = await recordingProxy(t, `${server.host}:${server.port}`);
  const [proxyHost, proxyPort] = proxy.address.split(':');
  const tlsUri = (hostPort: string, user: string, file: string): string => `nbds://${user}@${hostPort}/${exportName}?tls-psk-file=${file}`;

  const info = await runToolOk('nbdinfo', [tlsUri(proxy.address, 'alice', keys)]);
  assert.match(info.stdout, /with TLS/, describeRun('nbdinfo', info));
  assert.match(info.stdout, /export-size: 16777216/);

  const qemu = ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuDir},username=alice`, '--image-opts', `driver=nbd,host=${proxyHost},port=${proxyPort},export=${exportName},tls-creds=tls0`];
  await runToolOk('qemu-io', [...qemu, '-c', 'write -P 0x5a 12M 1M', '-c', 'flush', '-c', 'read -P 0x5a 12M 1M']);

  const wire = proxy.bytes();
  assert.ok(wire.length > 2 * MiB, `the proxy saw only ${wire.length} bytes`);
  assert.ok(!wire.includes(Buffer.alloc(256, 0x5a)), 'the written pattern crossed the wire readable');
  assert.ok(!wire.includes(Buffer.from(exportName)), 'the export name crossed the wire readable');

  // A random image in and out with nbdcopy (libnbd, TLS, several connections), below the pattern.
  const source = join(dir, 'source.raw');
  const image = Buffer.allocUnsafe(8 * MiB);
  randomFillSync(image);
  writeFileSync(source, image);
  const direct = `${server.host}:${server.port}`;
  await runToolOk('nbdcopy', ['--flush', source, tlsUri(direct, 'alice', keys)], { timeoutMs: 120_000 });
  const back = join(dir, 'back.raw');
  await runToolOk('nbdcopy', ['--connections=2', tlsUri(direct, 'alice', keys), back], { timeoutMs: 120_000 });
  const cmp = await runTool('cmp', ['-n', String(8 * MiB), source, back]);
  assert.equal(cmp.code, 0, describeRun('cmp', cmp));

  // Refused: no TLS (every option is TLS_REQD), the wrong key, a user the file does not name.
  const plain = await runTool('nbdinfo', [`nbd://${direct}/${exportName}`]);
  assert.notEqual(plain.code, 0, describeRun('nbdinfo without TLS', plain));
  const wrongKey = await runTool('nbdinfo', [tlsUri(direct, 'alice', wrong)]);
  assert.notEqual(wrongKey.code, 0, describeRun('nbdinfo with the wrong key', wrongKey));
  writeFileSync(join(dir, 'mallory.psk'), `mallory:${randomBytes(32).toString('hex')}\n`);
  const stranger = await runTool('nbdinfo', [tlsUri(direct, 'mallory', join(dir, 'mallory.psk'))]);
  assert.notEqual(stranger.code, 0, describeRun('nbdinfo as an unknown user', stranger));
  assert.match(server.stderr(), /TLS handshake failed/);

  // The server is undisturbed: the data written before is still served.
  await runToolOk('qemu-io', [...qemu.map((a) => a.replace(`host=${proxyHost},port=${proxyPort}`, `host=${server.host},port=${server.port}`)), '-c', 'read -P 0x5a 12M 1M']);

  // SIGHUP re-reads the PSK file: a user added is let in, a user removed is not, and a file
  // that no longer parses leaves the keys in force.
  const bobKeys = join(dir, 'bob.psk');
  const bobLine = `bob:${randomBytes(32).toString('hex')}\n`;
  writeFileSync(bobKeys, bobLine);
  const reloaded = async (n: number): Promise<void> => {
    server.proc.kill('SIGHUP');
    const deadline = Date.now() + 10_000;
    while ((server.stderr().match(/NBD TLS keys/g) ?? []).length < n) {
      if (Date.now() > deadline) throw new Error(`no reload logged: ${server.stderr().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  writeFileSync(keys, readFileSync(keys, 'utf8') + bobLine);
  await reloaded(1);
  await runToolOk('nbdinfo', [tlsUri(direct, 'bob', bobKeys)]);
  writeFileSync(keys, bobLine);
  await reloaded(2);
  const removed = await runTool('nbdinfo', [tlsUri(direct, 'alice', join(qemuDir, 'keys.psk'))]);
  assert.notEqual(removed.code, 0, describeRun('nbdinfo as a user removed from the file', removed));
  writeFileSync(keys, 'not a psk file\n');
  await reloaded(3);
  assert.match(server.stderr(), /NBD TLS keys not reloaded; the previous ones stay/);
  await runToolOk('nbdinfo', [tlsUri(direct, 'bob', bobKeys)]);
  assert.equal(await server.stop(), 0);
});
