/**
 * The NBD server's memory budget was invisible: nothing told an operator how much of it was
 * held or that clients waited for it. Its size, the bytes held against it now and the requests
 * that waited for it are metrics, read from the budget when scraped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequest } from '../../src/nbd/request-codec.js';
import { TinyClient } from './nbd-client-helper.js';
import { GatedBackend, noConnectionsWithin, serveDisk } from './nbd-test-backend.js';
import { until } from '../helpers/until.js';

const mib = 2 ** 20;
const budgetBytes = 4 * mib;
const reads = 16;

async function value(registry: Registry, name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await registry.metrics());
  assert.ok(m, `no metric ${name}`);
  return Number(m[1]);
}

test('the memory budget, the bytes held against it and the requests that waited for it are on the metrics', { timeout: 60_000 }, async (t) => {
  const registry = new Registry();
  const backend = new GatedBackend(32 * mib);
  backend.holds = (op) => op === 'read';
  const { server, port } = await serveDisk(t, backend, { memoryBudgetBytes: budgetBytes, registry });
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_bytes'), budgetBytes);
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_held_bytes'), 0);
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_waits_total'), 0);

  const greedy = await TinyClient.connect(port);
  t.after(() => greedy.close());
  await greedy.handshake('disk', { structured: false });
  greedy.socket.write(Buffer.concat(Array.from({ length: reads }, (_, i) => encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: i + 1, offset: i * mib, length: mib }))));
  await backend.startedAtLeast(budgetBytes / mib);
  // The reads the budget covers are held by the backend; the next one waits for budget.
  await until(async () => (await value(registry, 'raftblock_nbd_memory_budget_waits_total')) === 1, 5000, 'a request counted as waiting');
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_held_bytes'), budgetBytes);

  backend.open();
  for (let i = 0; i < reads; i++) {
    assert.equal((await greedy.reader.read(16)).readUInt32BE(4), 0);
    await greedy.reader.read(mib);
  }
  greedy.close();
  assert.ok(await noConnectionsWithin(server, 30_000));
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_held_bytes'), 0);
  // Every read past the first four waited its turn: as many waits as that at most, and the count never goes back.
  const waits = await value(registry, 'raftblock_nbd_memory_budget_waits_total');
  assert.ok(waits >= 1 && waits <= reads - budgetBytes / mib, `${waits} waits`);
  assert.equal(await value(registry, 'raftblock_nbd_memory_budget_waits_total'), waits);
});
