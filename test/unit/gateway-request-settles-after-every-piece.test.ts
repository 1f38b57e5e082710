/**
 * A gateway request over several PGs settles only once every piece has: when one piece fails
 * early, the others may still be writing into the request's (pooled) read buffer or sending
 * from its write buffer, which the NBD server reuses as soon as the request settles. And the
 * connection's abort signal reaches every piece.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyMap, type ClusterMap } from '../../src/cluster/map.js';
import { addNodeCommand, applyAll } from '../helpers/map.js';
import { Unavailable } from '../../src/common/errors.js';
import { VolumeBackend, type PgClient, type PgRequest } from '../../src/gateway/volume-backend.js';

const MiB = 1024 * 1024;

function clusterMap(): ClusterMap {
  return applyAll(
    emptyMap(),
    addNodeCommand(1, { zone: 'z1' }),
    { type: 'createPool', name: 'default', replicas: 1, pgCount: 8, failureDomain: 'zone' },
    { type: 'createVolume', name: 'vol0', sizeBytes: 16 * MiB, extentBytes: MiB },
  );
}

/** The first piece fails at once; the others answer after `slowMs`. */
class OneFailsFast implements PgClient {
  readonly events: string[] = [];
  readonly signals: (AbortSignal | undefined)[] = [];
  private first = true;
  constructor(private readonly m: ClusterMap, private readonly slowMs: number) {}
  map(): ClusterMap {
    return this.m;
  }
  async call(_groupId: number, _replicas: number[], req: PgRequest, signal?: AbortSignal): Promise<unknown> {
    this.signals.push(signal);
    if (this.first) {
      this.first = false;
      this.events.push('failed');
      throw new Unavailable('no leader');
    }
    await new Promise((r) => setTimeout(r, this.slowMs));
    this.events.push('piece done');
    return req.k === 'read' ? Buffer.alloc(req.l, 0x61) : undefined;
  }
}

test('a read or write over several PGs fails only after every piece has settled', async () => {
  for (const op of ['read', 'write', 'zero'] as const) {
    const client = new OneFailsFast(clusterMap(), 30);
    const backend = new VolumeBackend(client, client.map().volumes[0]);
    const buf = Buffer.alloc(3 * MiB);
    const gone = new AbortController();
    const run =
      op === 'read'
        ? backend.read(MiB / 2, 2 * MiB, buf, gone.signal)
        : op === 'write'
          ? backend.write(MiB / 2, buf.subarray(0, 2 * MiB), false, gone.signal)
          : backend.writeZeroes(MiB / 2, 2 * MiB, { fua: false, noHole: false, fastZero: false }, gone.signal);
    await assert.rejects(
      run.finally(() => client.events.push('request settled')),
      /no leader/,
    );
    assert.ok(client.events.length >= 3, `${op}: ${client.events.join(', ')}`);
    assert.equal(client.events.at(-1), 'request settled', `${op}: ${client.events.join(', ')}`);
    assert.ok(client.signals.every((s) => s === gone.signal), `${op}: a piece lost the connection's signal`);
  }
});

test('a block status asks the PG of the extent it starts in, for the rest of that extent only, when the rest spans no more extents than the pool has PGs', async () => {
  const asked: { groupId: number; req: PgRequest }[] = [];
  const m = clusterMap();
  const client: PgClient = {
    map: () => m,
    call: async (groupId, _replicas, req) => {
      asked.push({ groupId, req });
      return req.k === 'status' ? [{ length: req.l, hole: true, zero: true }] : undefined;
    },
  };
  const backend = new VolumeBackend(client, m.volumes[0]);
  // The rest of the request spans 6 extents, fewer than the pool's 8 PGs: no hole scan.
  const extents = await backend.blockStatus(MiB + 4096, 6 * MiB);
  assert.equal(asked.length, 1);
  assert.deepEqual(asked[0].req, { k: 'status', v: m.volumes[0].id, o: MiB + 4096, l: MiB - 4096 });
  assert.deepEqual(extents, [{ length: MiB - 4096, hole: true, zero: true }]);
  // Short of the extent's end: just the range asked.
  asked.length = 0;
  await backend.blockStatus(3 * MiB, 8192);
  assert.deepEqual(asked[0].req, { k: 'status', v: m.volumes[0].id, o: 3 * MiB, l: 8192 });
});
