import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';
import { TinyClient } from './nbd-client-helper.js';
import { GatedBackend, noConnectionsWithin, serveDisk } from './nbd-test-backend.js';

/**
 * NBD_CMD_DISC: "The server MUST handle all outstanding requests" before it closes. A client
 * that pipelined large READs before its DISC may read the replies slowly (a slow link): the
 * connection must stay open until they are written out. A client that reads none of them is
 * cut off once the server's close grace passes without progress.
 */

const mib = 2 ** 20;
const reads = 12;
const readBytes = 4 * mib; // 48 MiB of replies: far more than the kernel's socket buffers hold

function patterned(backend: GatedBackend): void {
  for (let i = 0; i < reads; i++) backend.data.fill(i + 1, i * readBytes, (i + 1) * readBytes);
}

/** Every READ and then the DISC, in one write: the server reads them all before replying. */
function readsThenDisc(): Buffer {
  const reqs = Array.from({ length: reads }, (_, i) => encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: i + 1, offset: i * readBytes, length: readBytes }));
  reqs.push(encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 999, offset: 0, length: 0 }));
  return Buffer.concat(reqs);
}

test('a client that starts reading its replies seconds after its DISC still gets every one, then the close', { timeout: 120_000 }, async (t) => {
  const backend = new GatedBackend(reads * readBytes, readBytes);
  patterned(backend);
  // Replies may queue without bound here, so that the server reads the DISC at once.
  const { server, port } = await serveDisk(t, backend, { closeGraceMs: 60_000, limits: { maxQueuedReplyBytes: 1024 * mib } });
  const c = await TinyClient.connect(port);
  t.after(() => c.close());
  await c.handshake('disk', { structured: false });
  c.socket.pause();
  for (let i = 0; i < reads; i++) c.send(P.NBD_CMD_READ, i * readBytes, readBytes); // registers the handles
  c.socket.write(encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 999, offset: 0, length: 0 }));
  await backend.startedAtLeast(reads);
  await new Promise((r) => setTimeout(r, 3_000)); // a slow client, well within the grace
  c.socket.resume();
  const seen = new Set<number>();
  for (let i = 0; i < reads; i++) {
    const r = await c.nextReply();
    assert.equal(r.error, 0);
    assert.ok(r.data!.every((b) => b === r.handle), `reply ${r.handle} holds its blocks`);
    seen.add(r.handle);
  }
  assert.equal(seen.size, reads);
  await c.reader.closed();
  assert.ok(await noConnectionsWithin(server, 30_000), 'the session settled');
});

test('a client that sent DISC and reads none of its replies is cut off after the close grace', { timeout: 120_000 }, async (t) => {
  const backend = new GatedBackend(reads * readBytes, readBytes);
  const { server, port } = await serveDisk(t, backend, { closeGraceMs: 200, limits: { maxQueuedReplyBytes: 1024 * mib } });
  const c = await TinyClient.connect(port);
  t.after(() => c.close());
  await c.handshake('disk', { structured: false });
  c.socket.pause();
  c.socket.write(readsThenDisc());
  await backend.startedAtLeast(reads);
  assert.ok(await noConnectionsWithin(server, 60_000), 'the session settled');
  c.socket.resume(); // a paused socket would not notice the close
  await c.reader.closed();
});
