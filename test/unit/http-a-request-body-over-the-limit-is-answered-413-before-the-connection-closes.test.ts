/**
 * A node's HTTP server refuses a request body over its 64 KiB limit with 413 PAYLOAD_TOO_LARGE
 * and its JSON error body, written out before the connection closes (Connection: close), and
 * without reading the rest of the body: it used to destroy the socket in the tick it refused,
 * and the client saw a reset rather than an answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { Registry } from 'prom-client';
import { startAdminHttp, type AdminSource } from '../../src/cluster/http.js';
import { emptyMap } from '../../src/cluster/map.js';

const limit = 64 * 1024;

/** Sends `head` then `body` (left unfinished, as a client still sending would), and reads until the server closes. */
function exchange(port: number, head: string, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.write(head);
      s.write(body);
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    // A reset after the answer (the body left unread) still leaves the answer read.
    s.on('error', () => undefined);
    s.on('close', () => resolve(Buffer.concat(chunks).toString()));
  });
}

/** The status, headers (lower-cased) and JSON body of an HTTP/1.1 answer, its body whole or chunked. */
function parse(answer: string): { status: number; headers: string; body: { error?: { code: string; message: string } } } {
  const at = answer.indexOf('\r\n\r\n');
  const headers = answer.slice(0, at).toLowerCase();
  let body = answer.slice(at + 4);
  if (/\r\ntransfer-encoding: chunked/.test(headers)) {
    let whole = '';
    for (let size = parseInt(body, 16); size > 0; size = parseInt(body, 16)) {
      const start = body.indexOf('\r\n') + 2;
      whole += body.slice(start, start + size);
      body = body.slice(start + size + 2);
    }
    body = whole;
  }
  return { status: Number(/^http\/1\.1 (\d+)/.exec(headers)?.[1]), headers, body: JSON.parse(body) as { error?: { code: string; message: string } } };
}

test('a request body over the limit is answered 413 PAYLOAD_TOO_LARGE before the connection closes', async (t) => {
  let proposed = 0;
  const source = {
    map: () => emptyMap(),
    health: () => null,
    proposeMeta: async () => {
      proposed++;
      return { epoch: 1, volume: {} };
    },
    spreadMap: async () => undefined,
  } as unknown as AdminSource;
  const http = await startAdminHttp({ host: '127.0.0.1', port: 0 }, new Registry(), source);
  t.after(() => http.close());
  const port = http.address.port;
  const post = (headers: string): string => `POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}\r\n`;

  // Declared too large: refused before the body is read (only part of it is ever sent).
  const declared = parse(await exchange(port, post(`Content-Length: ${16 * limit}\r\n`), Buffer.alloc(2 * limit, 0x20)));
  assert.equal(declared.status, 413);
  assert.match(declared.headers, /\r\nconnection: close(\r\n|$)/);
  assert.equal(declared.body.error?.code, 'PAYLOAD_TOO_LARGE');
  assert.match(declared.body.error?.message ?? '', /over the limit of 65536 bytes/);

  // Chunked, no length declared: refused once the bytes pass the limit, the rest never ending.
  const chunk = Buffer.alloc(limit + 1, 0x20);
  const chunked = parse(await exchange(port, post('Transfer-Encoding: chunked\r\n'), Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])));
  assert.equal(chunked.status, 413);
  assert.match(chunked.headers, /\r\nconnection: close(\r\n|$)/);
  assert.equal(chunked.body.error?.code, 'PAYLOAD_TOO_LARGE');
  assert.equal(proposed, 0);

  // A body of the limit exactly is taken.
  const json = '{"name":"v","sizeBytes":1048576}';
  const full = Buffer.from(json.padEnd(limit, ' '));
  const taken = await exchange(port, post(`Content-Length: ${full.length}\r\nConnection: close\r\n`), full);
  assert.match(taken, /^HTTP\/1\.1 201 /);
  assert.equal(proposed, 1);
});
