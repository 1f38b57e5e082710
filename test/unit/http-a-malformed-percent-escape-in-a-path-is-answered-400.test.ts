/**
 * A volume or pool name in an admin API path with a malformed percent-escape is the client's
 * mistake: 400 INVALID_ARGUMENT naming the segment, not the 500 INTERNAL that
 * decodeURIComponent's URIError became.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { Registry } from 'prom-client';
import { startAdminHttp, type AdminSource } from '../../src/cluster/http.js';
import { emptyMap } from '../../src/cluster/map.js';

function send(port: number, method: string, path: string, body?: string): Promise<{ status: number; body: { error?: { code: string; message: string } } }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as { error?: { code: string; message: string } } }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a malformed percent-escape in a path is answered 400 INVALID_ARGUMENT naming the segment', async (t) => {
  const called: string[] = [];
  const source = {
    map: () => emptyMap(),
    health: () => null,
    proposeMeta: async () => {
      called.push('proposeMeta');
      return { epoch: 1 };
    },
    resizeVolume: async () => {
      called.push('resizeVolume');
      return { epoch: 1 };
    },
    resetPg: async () => {
      called.push('resetPg');
      return { epoch: 1 };
    },
    spreadMap: async () => undefined,
  } as unknown as AdminSource;
  const http = await startAdminHttp({ host: '127.0.0.1', port: 0 }, new Registry(), source);
  t.after(() => http.close());
  const port = http.address.port;
  for (const [method, path, segment, body] of [
    ['DELETE', '/v1/volumes/%E0%A4%A', '%E0%A4%A', undefined],
    ['POST', '/v1/volumes/%ZZ/resize', '%ZZ', '{"sizeBytes":1048576}'],
    ['POST', '/v1/pools/p%/pgs/0/reset', 'p%', '{"acceptDataLoss":true}'],
  ] as const) {
    const r = await send(port, method, path, body);
    assert.equal(r.status, 400, `${method} ${path}`);
    assert.equal(r.body.error?.code, 'INVALID_ARGUMENT');
    assert.ok(r.body.error?.message.includes(JSON.stringify(segment)), r.body.error?.message);
  }
  assert.deepEqual(called, []);
  // A well-formed escape still names the volume.
  assert.equal((await send(port, 'DELETE', '/v1/volumes/v%31')).status, 200);
  assert.deepEqual(called, ['proposeMeta']);
});
