import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveSecurity } from '../../src/cli/commands/start-security.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

test('a start without security flags keeps what cluster.json remembers, and says so', () => {
  const previous = { peerTls: true, nbdTlsPsk: '/etc/rb/nbd.psk', adminTokenFile: '/etc/rb/admin.token' };
  const r = resolveSecurity({}, previous);
  assert.deepEqual(r.settings, previous);
  assert.deepEqual(r.remembered, [
    '--peer-tls (remembered; --no-peer-tls turns it off)',
    '--nbd-tls-psk /etc/rb/nbd.psk (remembered; --no-nbd-tls-psk turns it off)',
    '--admin-token-file /etc/rb/admin.token (remembered; --no-admin-token-file turns it off)',
  ]);
});

test('a flag given wins over what is remembered; --no-… turns a setting off', () => {
  const previous = { peerTls: true, nbdTlsPsk: '/etc/rb/nbd.psk', adminTokenFile: '/etc/rb/admin.token' };
  const r = resolveSecurity({ peerTls: false, nbdTlsPsk: 'other.psk', adminTokenFile: false }, previous);
  assert.deepEqual(r.settings, { nbdTlsPsk: resolve('other.psk') });
  assert.deepEqual(r.remembered, []);
});

test('a new cluster, or one from before settings were remembered, runs with what it is given', () => {
  assert.deepEqual(resolveSecurity({}, undefined), { settings: {}, remembered: [] });
  assert.deepEqual(resolveSecurity({ peerTls: true, adminTokenFile: 'tok' }, undefined).settings, { peerTls: true, adminTokenFile: resolve('tok') });
  // --no-… on a cluster that never had the setting: nothing to turn off, nothing remembered.
  assert.deepEqual(resolveSecurity({ peerTls: false, nbdTlsPsk: false, adminTokenFile: false }, {}), { settings: {}, remembered: [] });
});

test('raftblock start names a damaged cluster.json, or a remembered PSK file that is gone, and starts nothing', () => {
  const dir = mkdtempSync(join('/var/tmp', 'raftblock-start-'));
  try {
    const run = (data: string, ...args: string[]) => spawnSync(process.execPath, [cli, 'start', '--data', data, ...args], { encoding: 'utf8', timeout: 30_000 });
    const cases: [string, string, RegExp][] = [
      ['not-json', '{"nodes": 3,', /cluster\.json is not readable JSON/],
      ['no-ports', '{"nodes": 3, "host": "127.0.0.1"}', /cluster\.json does not describe a cluster/],
      ['too-many-nodes', '{"nodes": 99, "host": "127.0.0.1", "nbdPort": 20001, "httpPort": 20201, "peerPort": 20401}', /cluster\.json does not describe a cluster \(nodes 1\.\.64,/],
      ['no-pgs', '{"nodes": 3, "host": "127.0.0.1", "nbdPort": 20001, "httpPort": 20201, "peerPort": 20401, "pgCount": 0}', /cluster\.json does not describe a cluster/],
      [
        'psk-gone',
        JSON.stringify({ nodes: 3, host: '127.0.0.1', nbdPort: 10809, httpPort: 10900, peerPort: 11000, security: { nbdTlsPsk: join(dir, 'gone.psk') } }),
        /gone\.psk.*--no-nbd-tls-psk turns it off/,
      ],
    ];
    for (const [name, content, message] of cases) {
      const data = join(dir, name);
      mkdirSync(data);
      writeFileSync(join(data, 'cluster.json'), content);
      const r = run(data);
      assert.notEqual(r.status, 0, `${name}: the start went on`);
      assert.match(r.stderr, message, name);
      assert.equal(existsSync(join(data, 'node-1')), false, `${name}: a node was started`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
