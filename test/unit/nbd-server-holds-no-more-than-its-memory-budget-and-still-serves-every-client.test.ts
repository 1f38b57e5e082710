import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';
import { TinyClient } from './nbd-client-helper.js';
import { GatedBackend, noConnectionsWithin, serveDisk } from './nbd-test-backend.js';

/**
 * The server's memory budget bounds the bytes held for requests in flight across connections:
 * a client past it is not read from until its turn comes (its requests are served later, not
 * refused), while a client that holds nothing is always served, so one greedy client cannot
 * starve the rest.
 */

const mib = 2 ** 20;
const budgetBytes = 4 * mib;
const greedyRequests = 16;

test('READs in flight past the memory budget are not issued until budget is freed; an idle client is served meanwhile', { timeout: 120_000 }, async (t) => {
  const backend = new GatedBackend(32 * mib);
  for (let i = 0; i < greedyRequests; i++) backend.data.fill(i + 1, i * mib, (i + 1) * mib);
  backend.holds = (op, offset) => op === 'read' && offset < greedyRequests * mib;
  const { server, port } = await serveDisk(t, backend, { memoryBudgetBytes: budgetBytes });

  const greedy = await TinyClient.connect(port);
  t.after(() => greedy.close());
  await greedy.handshake('disk', { structured: false });
  // Every READ in one write, so the server sees them all at once.
  greedy.socket.write(Buffer.concat(Array.from({ length: greedyRequests }, (_, i) => encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: i + 1, offset: i * mib, length: mib }))));
  await backend.startedAtLeast(1);

  const polite = await TinyClient.connect(port);
  t.after(() => polite.close());
  await polite.handshake('disk');
  const r = await polite.request(P.NBD_CMD_READ, 24 * mib, 4096);
  assert.equal(r.error, 0, 'a client holding nothing is served while the budget is spent');
  const w = await polite.request(P.NBD_CMD_WRITE, 24 * mib, 4096, 0, Buffer.alloc(4096, 0xee));
  assert.equal(w.error, 0);

  const greedyReads = backend.started.filter((s) => s.offset < greedyRequests * mib).length;
  assert.equal(greedyReads, budgetBytes / mib, 'only the reads the budget covers were issued');

  backend.open();
  // The greedy client's pipeline completes: backpressure, not refusal. Its replies are
  // simple ones, so read them raw (TinyClient did not register these handles).
  for (let i = 0; i < greedyRequests; i++) {
    const head = await greedy.reader.read(16);
    assert.equal(head.readUInt32BE(4), 0);
    const handle = head.readUInt32BE(12);
    const data = await greedy.reader.read(mib);
    assert.ok(data.every((b) => b === handle), `reply ${handle} holds its blocks`);
  }
  greedy.close();
  polite.close();
  assert.ok(await noConnectionsWithin(server, 30_000));
  assert.equal(server.budgetHeldBytes, 0, 'every byte taken was given back');
});

test('WRITE payloads past the memory budget are left unread until budget is freed', { timeout: 120_000 }, async (t) => {
  const backend = new GatedBackend(32 * mib);
  backend.holds = (op, offset) => op === 'write' && offset < greedyRequests * mib;
  const { server, port } = await serveDisk(t, backend, { memoryBudgetBytes: budgetBytes });

  const greedy = await TinyClient.connect(port);
  t.after(() => greedy.close());
  await greedy.handshake('disk');
  const handles = Array.from({ length: greedyRequests }, (_, i) => greedy.send(P.NBD_CMD_WRITE, i * mib, mib, 0, Buffer.alloc(mib, i + 1)));
  await backend.startedAtLeast(budgetBytes / mib);

  const polite = await TinyClient.connect(port);
  t.after(() => polite.close());
  await polite.handshake('disk');
  assert.equal((await polite.request(P.NBD_CMD_WRITE, 24 * mib, 4096, 0, Buffer.alloc(4096, 0xee))).error, 0);
  // Time for the rest of the greedy client's megabytes to arrive, were they being read.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(backend.started.filter((s) => s.offset < greedyRequests * mib).length, budgetBytes / mib);

  backend.open();
  const answered = new Set<number>();
  for (let i = 0; i < greedyRequests; i++) {
    const reply = await greedy.nextReply();
    assert.equal(reply.error, 0);
    answered.add(reply.handle);
  }
  assert.deepEqual([...answered].sort((a, b) => a - b), handles);
  for (let i = 0; i < greedyRequests; i++) assert.equal(backend.data[i * mib + mib - 1], i + 1);
  greedy.close();
  polite.close();
  assert.ok(await noConnectionsWithin(server, 30_000));
  assert.equal(server.budgetHeldBytes, 0);
});
