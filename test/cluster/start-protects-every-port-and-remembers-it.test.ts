/**
 * `raftblock start --nbd-tls-psk FILE --peer-tls --admin-token-file FILE --http-tls-cert FILE
 * --http-tls-key FILE`: every port of every node is protected. vol0 is served over TLS only,
 * the printed instructions show TLS clients, a bad PSK file stops the start before any node
 * runs. The HTTP port speaks HTTPS only: the admin commands take the CA from --ca-file or
 * $RAFTBLOCK_CA_FILE, refuse a node whose certificate that CA did not sign, and the token never
 * crosses the wire in the clear. The admin API wants the token (--token-file or
 * $RAFTBLOCK_ADMIN_TOKEN_FILE); /metrics stays open (over HTTPS). SIGHUP has every node re-read
 * the PSK file and the certificate. Started again without the flags, the cluster keeps them
 * (DIR/cluster.json); `--no-…` turns them off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { describeRun, runTool, runToolOk } from '../helpers/nbd-server.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { get as httpsGet } from 'node:https';
import { copyFileSync } from 'node:fs';
import { AdminClient } from '../../src/cluster/admin-client.js';
import { selfSignedCert } from '../helpers/certs.js';
import { recordingProxy } from '../helpers/recording-proxy.js';
import { currentPids, freeBase, startCluster, stopCluster } from './start-cluster.js';

/** GET over HTTPS trusting `ca`: the body, or the error's message. */
function getHttps(url: string, ca: Buffer): Promise<{ ok: boolean; text: string }> {
  return new Promise((resolve) => {
    // A connection of its own each time: a pooled one would keep the certificate it began with.
    httpsGet(url, { ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ ok: res.statusCode === 200, text: Buffer.concat(chunks).toString() }));
    }).on('error', (err) => resolve({ ok: false, text: err.message }));
  });
}

test('raftblock start protects every port (NBD TLS-PSK, peer TLS, HTTPS, admin token) and remembers it', { timeout: 240_000 }, async (t) => {
  if (!requireTools(t, 'nbdinfo', 'qemu-io', 'openssl')) return;
  const dir = tempDir(t);
  const keys = join(dir, 'nbd.psk');
  writeFileSync(keys, `ops:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });

  const bad = join(dir, 'bad.psk');
  writeFileSync(bad, 'ops:abcd\n');
  const refused = await runCli(['start', '--data', join(dir, 'refused'), '--nbd-tls-psk', bad], { timeoutMs: 30_000 });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /the key of ops holds 2 bytes; at least 16 are needed/);
  assert.ok(!existsSync(join(dir, 'refused')), 'the start made its data dir before it read the PSK file');

  const tokenFile = join(dir, 'admin.token');
  const token = randomBytes(24).toString('base64url');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const cert = selfSignedCert(dir, 'node');
  const stranger = selfSignedCert(dir, 'stranger');
  const caFile = join(dir, 'ca.crt');
  copyFileSync(cert.cert, caFile); // the self-signed certificate is its own CA
  const https = ['--http-tls-cert', cert.cert, '--http-tls-key', cert.key];
  const cluster = await startCluster(t, join(dir, 'data'), { nbd: await freeBase(3), http: await freeBase(3), peer: await freeBase(3) }, ['--nbd-tls-psk', keys, '--peer-tls', '--admin-token-file', tokenFile, ...https]);
  for (const pid of currentPids(cluster)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.equal(argv[argv.indexOf('--nbd-tls-psk') + 1], keys, `node ${pid} runs without the PSK file: ${argv.join(' ')}`);
    assert.equal(argv[argv.indexOf('--http-tls-cert') + 1], cert.cert, `node ${pid} runs without the certificate: ${argv.join(' ')}`);
  }
  assert.ok(cluster.lines.some((l) => l.includes('NBD requires TLS')), cluster.lines.join('\n'));
  assert.ok(cluster.lines.some((l) => l.includes(`tls-psk-file=${keys}`)), cluster.lines.join('\n'));
  assert.ok(cluster.lines.some((l) => l.includes(`--ca-file ${cert.cert}`) && l.includes('https://')), cluster.lines.join('\n'));

  // The admin API over HTTPS: refused without the token, served with it (flags or environment).
  const http = cluster.ready.http;
  const denied = await runCli(['status', '--server', http[1], '--ca-file', caFile]);
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /UNAUTHENTICATED/);
  const status = await runCli(['status', '--server', http[1], '--token-file', tokenFile, '--ca-file', caFile, '--json']);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as { nodes: unknown[] }).nodes.length, 3);
  const listed = await runCli(['volume', 'list', '--server', http[2]], { env: { ...process.env, RAFTBLOCK_ADMIN_TOKEN_FILE: tokenFile, RAFTBLOCK_CA_FILE: caFile } });
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^vol0\s/m);
  // Not in the clear, and not to a node whose certificate the CA did not sign.
  const plainHttp = await runCli(['status', '--server', http[1], '--token-file', tokenFile]);
  assert.notEqual(plainHttp.code, 0, 'plain HTTP was answered on an HTTPS port');
  const untrusted = await runCli(['status', '--server', http[1], '--token-file', tokenFile, '--ca-file', stranger.cert]);
  assert.notEqual(untrusted.code, 0);
  assert.match(untrusted.stderr, /TLS with raftblock node .* failed/);
  const metrics = await getHttps(`https://${http[0]}/metrics`, readFileSync(caFile));
  assert.ok(metrics.ok, metrics.text);
  assert.match(metrics.text, /raftblock_transport_tls_connections_total/);
  const wire = await recordingProxy(t, http[0]);
  assert.ok((await new AdminClient(wire.address, { token, ca: readFileSync(caFile) }).listVolumes()).volumes.some((v) => v.name === 'vol0'));
  assert.ok(wire.bytes().length > 0 && !wire.bytes().includes(token), 'the admin token crossed the wire in the clear');

  const [first, , last] = cluster.ready.nbd;
  const info = await runToolOk('nbdinfo', [`nbds://ops@${first}/vol0?tls-psk-file=${keys}`]);
  assert.match(info.stdout, /with TLS/);
  assert.match(info.stdout, /export-size: 1073741824/);
  const plain = await runTool('nbdinfo', [`nbd://${last}/vol0`]);
  assert.notEqual(plain.code, 0, describeRun('nbdinfo without TLS', plain));

  const qemuDir = join(dir, 'qemu');
  await runToolOk('mkdir', ['-p', qemuDir]);
  await runToolOk('cp', [keys, join(qemuDir, 'keys.psk')]);
  const through = (hostPort: string): string[] => {
    const [host, port] = hostPort.split(':');
    return ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuDir},username=ops`, '--image-opts', `driver=nbd,host=${host},port=${port},export=vol0,tls-creds=tls0`];
  };
  await runToolOk('qemu-io', [...through(first), '-c', 'write -P 0x7e 3M 256k', '-c', 'flush']);
  await runToolOk('qemu-io', [...through(last), '-c', 'read -P 0x7e 3M 256k']);

  // SIGHUP to raftblock start: every node re-reads the PSK file, and a user added is let in;
  // and the certificate, renewed in place (the old CA is refused from then on).
  const renewed = selfSignedCert(dir, 'renewed');
  copyFileSync(renewed.cert, cert.cert);
  copyFileSync(renewed.key, cert.key);
  const newcomer = join(dir, 'newcomer.psk');
  const line = `newcomer:${randomBytes(32).toString('hex')}\n`;
  writeFileSync(newcomer, line);
  writeFileSync(keys, readFileSync(keys, 'utf8') + line);
  cluster.proc.kill('SIGHUP');
  for (const hostPort of cluster.ready.nbd) {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await runTool('nbdinfo', [`nbds://newcomer@${hostPort}/vol0?tls-psk-file=${newcomer}`]);
      if (r.code === 0) break;
      if (Date.now() > deadline) assert.fail(describeRun(`nbdinfo as the new user at ${hostPort}`, r));
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  for (const hostPort of http) {
    const renewedMetrics = await getHttps(`https://${hostPort}/metrics`, readFileSync(renewed.cert));
    assert.ok(renewedMetrics.ok, `${hostPort} does not serve the renewed certificate: ${renewedMetrics.text}`);
    assert.equal((await getHttps(`https://${hostPort}/metrics`, readFileSync(caFile))).ok, false, `${hostPort} still serves the old certificate`);
  }
  copyFileSync(renewed.cert, caFile);
  await stopCluster(cluster);

  // Started again without the flags: cluster.json remembers them, so nothing is served in the clear.
  const ports = { nbd: Number(first.split(':')[1]), http: Number(http[0].split(':')[1]), peer: 0 };
  const layout = JSON.parse(readFileSync(join(dir, 'data', 'cluster.json'), 'utf8')) as { peerPort: number };
  ports.peer = layout.peerPort;
  const again = await startCluster(t, join(dir, 'data'), ports);
  for (const pid of currentPids(again)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.equal(argv[argv.indexOf('--nbd-tls-psk') + 1], keys, `node ${pid} restarted without the PSK file: ${argv.join(' ')}`);
    assert.equal(argv[argv.indexOf('--admin-token-file') + 1], tokenFile, `node ${pid} restarted without the token: ${argv.join(' ')}`);
    assert.ok(argv.includes('--peer-tls'), `node ${pid} restarted without --peer-tls: ${argv.join(' ')}`);
    assert.equal(argv[argv.indexOf('--http-tls-key') + 1], cert.key, `node ${pid} restarted without HTTPS: ${argv.join(' ')}`);
  }
  assert.ok(again.lines.some((l) => l.includes(`with --nbd-tls-psk ${keys} (remembered`)), again.lines.join('\n'));
  assert.ok(again.lines.some((l) => l.includes(`with --http-tls-cert ${cert.cert} (remembered; --no-http-tls turns it off)`)), again.lines.join('\n'));
  const stillPlain = await runTool('nbdinfo', [`nbd://${first}/vol0`]);
  assert.notEqual(stillPlain.code, 0, describeRun('nbdinfo without TLS after a restart without the flags', stillPlain));
  assert.match((await runCli(['status', '--server', http[0], '--ca-file', caFile])).stderr, /UNAUTHENTICATED/);
  await stopCluster(again);

  // --no-… turns them off: plain clients and tokenless admin commands are served, the data is there.
  const open = await startCluster(t, join(dir, 'data'), ports, ['--no-nbd-tls-psk', '--no-admin-token-file', '--no-peer-tls', '--no-http-tls']);
  for (const pid of currentPids(open)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    for (const flag of ['--nbd-tls-psk', '--admin-token-file', '--peer-tls', '--http-tls-cert']) assert.ok(!argv.includes(flag), `node ${pid} runs with ${flag}: ${argv.join(' ')}`);
  }
  await runToolOk('qemu-io', ['-f', 'raw', `nbd://${last}/vol0`, '-c', 'read -P 0x7e 3M 256k']);
  const openStatus = await runCli(['status', '--server', http[0], '--json']);
  assert.equal(openStatus.code, 0, openStatus.stderr);
  // Over plain HTTP the token shows on the wire (so the check above can fail).
  const clearWire = await recordingProxy(t, http[0]);
  await new AdminClient(clearWire.address, { token }).listVolumes();
  assert.ok(clearWire.bytes().includes(token), 'the plain-HTTP control did not see the token');
  await stopCluster(open);
});
