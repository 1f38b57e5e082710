import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';
import { TinyClient } from './nbd-client-helper.js';
import { GatedBackend, serveDisk } from './nbd-test-backend.js';

/**
 * A client that sends large READs and never reads the replies leaves its session paused behind
 * its queued replies, so it never finishes by itself. close() must still resolve (after its
 * grace, by cutting that client off), while a client that behaves gets its in-flight request
 * answered before its connection is closed.
 */

const deadlineMs = 60_000;

test('close() resolves despite a client that reads none of its replies, and answers a well-behaved client first', { timeout: deadlineMs * 2 }, async (t) => {
  const mib = 2 ** 20;
  const backend = new GatedBackend(64 * mib, 32 * mib);
  backend.holds = (op, offset) => op === 'read' && offset === 0;
  const { server, port } = await serveDisk(t, backend);

  const greedy = await TinyClient.connect(port);
  t.after(() => greedy.close());
  await greedy.handshake('disk', { structured: false });
  greedy.socket.pause(); // reads none of its replies from now on
  for (let i = 0; i < 8; i++) greedy.socket.write(encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: i + 1, offset: mib, length: 32 * mib }));
  await backend.startedAtLeast(1);

  const polite = await TinyClient.connect(port);
  t.after(() => polite.close());
  await polite.handshake('disk');
  const before = backend.started.length;
  polite.send(P.NBD_CMD_READ, 0, 4096);
  await backend.startedAtLeast(before + 1); // the polite read is in flight, held at the gate

  let timer: NodeJS.Timeout | undefined;
  const closed = server.close().then(() => 'closed' as const);
  backend.open();
  const reply = await polite.nextReply();
  assert.equal(reply.error, 0, 'the request in flight at close() is answered');
  await polite.reader.closed();
  const outcome = await Promise.race([closed, new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), deadlineMs)))]);
  clearTimeout(timer);
  if (outcome === 'hung') greedy.close(); // so that the server's own cleanup can finish
  assert.equal(outcome, 'closed', 'close() resolved');
  assert.equal(server.connectionCount, 0);
  greedy.socket.resume(); // a paused socket would not notice the close
  await greedy.reader.closed();
});
