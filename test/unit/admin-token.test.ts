/**
 * The admin API's token: a node's HTTP server with one answers /v1 only to requests that carry
 * it (401 UNAUTHENTICATED otherwise), while /metrics and /healthz stay open; the admin client
 * sends it; token files are checked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { closedWithin, openIdle } from '../helpers/sockets.js';
import { maxHttpConnections } from '../../src/common/http-limits.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { AdminClient } from '../../src/cluster/admin-client.js';
import { readAdminToken } from '../../src/cluster/admin-token.js';
import { startAdminHttp, type AdminSource } from '../../src/cluster/http.js';
import { emptyMap } from '../../src/cluster/map.js';

const token = 'Zx7-token-for-the-admin-api-0123456789';

function get(addr: string, path: string, authorization?: string): Promise<{ status: number; body: string }> {
  const [host, port] = addr.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, headers: authorization === undefined ? {} : { authorization } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('with a token the admin API answers only requests that carry it; monitoring stays open', async (t) => {
  const map = emptyMap();
  let proposed = 0;
  const source = {
    map: () => map,
    status: () => ({ nodeId: 1, epoch: map.epoch, uptimeMs: 1, groups: [] }),
    health: () => null,
    proposeMeta: async () => {
      proposed++;
      return { epoch: 1 };
    },
  } as unknown as AdminSource;
  const http = await startAdminHttp({ host: '127.0.0.1', port: 0 }, new Registry(), source, { adminToken: token });
  t.after(() => http.close());
  const addr = `127.0.0.1:${http.address.port}`;

  assert.equal((await get(addr, '/metrics')).status, 200);
  assert.equal((await get(addr, '/healthz')).status, 200);
  for (const auth of [undefined, 'Bearer wrong-token-of-some-length', `Bearer ${token}x`, token, `bearer ${token}`]) {
    const r = await get(addr, '/v1/map', auth);
    assert.equal(r.status, 401, `authorization ${auth}`);
    assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'UNAUTHENTICATED');
  }
  assert.equal((await get(addr, '/v1/map', `Bearer ${token}`)).status, 200);

  await assert.rejects(new AdminClient(addr).createVolume({ name: 'v', sizeBytes: 1 << 20 }), (e: Error & { code?: string }) => e.code === 'UNAUTHENTICATED' && /needs its token/.test(e.message));
  await assert.rejects(new AdminClient(addr, { token: 'another-token-0123456789' }).map(), (e: Error & { code?: string }) => e.code === 'UNAUTHENTICATED');
  assert.equal(proposed, 0, 'a change was made without the token');
  assert.equal((await new AdminClient(addr, { token }).map()).epoch, map.epoch);
  assert.equal((await new AdminClient(addr, { token }).status()).nodeId, 1);
});

test('admin token files: trailing line ends dropped; short, spaced or missing ones refused', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'raftblock-token-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'ok'), `${token}\r\n`);
  assert.equal(readAdminToken(join(dir, 'ok')), token);
  writeFileSync(join(dir, 'short'), 'abc\n');
  assert.throws(() => readAdminToken(join(dir, 'short')), /holds 3 bytes; an admin token needs at least 16/);
  writeFileSync(join(dir, 'spaced'), 'a token with spaces in it\n');
  assert.throws(() => readAdminToken(join(dir, 'spaced')), /printable ASCII without spaces/);
  assert.throws(() => readAdminToken(join(dir, 'absent')), /cannot read the admin token file/);
});

test('the HTTP port holds a bounded number of connections: more are closed at once, and monitoring gets in again', async (t) => {
  const source = { map: () => emptyMap(), status: () => ({}), health: () => null } as unknown as AdminSource;
  const http = await startAdminHttp({ host: '127.0.0.1', port: 0 }, new Registry(), source);
  t.after(() => http.close());
  const addr = `127.0.0.1:${http.address.port}`;
  const idle = await openIdle(http.address.port, maxHttpConnections + 20);
  t.after(() => idle.forEach((s) => s.destroy()));
  assert.equal(await closedWithin(idle, 1000), 20, 'connections past the limit were not closed');
  idle.forEach((s) => s.destroy());
  for (let i = 0; ; i++) {
    const r = await get(addr, '/healthz').catch(() => undefined);
    if (r?.status === 200) break;
    assert.ok(i < 200, 'the port did not serve again once the idle connections closed');
    await new Promise((res) => setTimeout(res, 10));
  }
});
