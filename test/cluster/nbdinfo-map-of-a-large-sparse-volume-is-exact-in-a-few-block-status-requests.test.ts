/**
 * Block status answered at most one extent per request, one PG call each: `nbdinfo --map` (and
 * nbdcopy, qemu-img convert, which walk block status to skip holes) of a mostly empty 64 GiB
 * volume of 4 MiB extents took 16,384 requests, and of 1 PiB 2^28. A hole now reaches as far
 * as every PG of the pool says its data resumes, one call per PG. Real nodes, a real client: a
 * 64 GiB volume with a block written near its start, one in its middle and its last block,
 * mapped by `nbdinfo --map` through a gateway that did not take the writes, right after them
 * (the writes may still be in the leaders' write-behind): the map is exact, data where written
 * and holes elsewhere, in far fewer block status requests than the volume has extents, each
 * scan answered (no fallback).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { TestCluster } from '../helpers/cluster.js';
import { requireTools } from '../helpers/tools.js';
import { requirePythonNbd, writeTagged } from './io.js';

const KiB = 1024;
const GiB = 2 ** 30;
const B = 4 * KiB;

interface MapEntry {
  offset: number;
  length: number;
  /** NBD state bits: 0 data, 1 hole, 2 zero (3 a hole reading as zeros). */
  type: number;
}

/** `nbdinfo --map` of `uri`, runs of one type joined (the answers' split is the server's choice). */
function nbdinfoMap(uri: string, timeoutMs: number): Promise<MapEntry[]> {
  return new Promise((resolve, reject) =>
    execFile('nbdinfo', ['--json', '--map', uri], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`nbdinfo --map ${uri}: ${err.message}\n${stderr}`));
      const joined: MapEntry[] = [];
      for (const e of JSON.parse(stdout) as MapEntry[]) {
        const last = joined.at(-1);
        if (last && last.type === e.type && last.offset + last.length === e.offset) last.length += e.length;
        else joined.push({ offset: e.offset, length: e.length, type: e.type });
      }
      resolve(joined);
    }),
  );
}

test('nbdinfo --map of a 64 GiB volume with three blocks written is exact, in a few block status requests instead of one per extent', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdinfo') || !requirePythonNbd(t)) return;
  const sizeBytes = 64 * GiB;
  const cluster = await TestCluster.start(t, { nodes: 3, volumes: [{ name: 'vol0', sizeBytes }] });
  const map = await cluster.map();
  const volume = map.volumes.find((v) => v.name === 'vol0')!;
  const pgCount = map.pools.find((p) => p.name === volume.pool)!.pgCount;
  const extentCount = sizeBytes / volume.extentBytes;

  // Near the start, in the middle (not at an extent's start), and the last block.
  const written = [B, 32 * GiB + 12 * KiB, sizeBytes - B];
  await writeTagged(cluster, 1, written.map((o) => o / B), 'mapped');

  const via = 2;
  const requests = (): Promise<number> => cluster.metric(via, 'raftblock_nbd_requests_total{command="block_status"}');
  const scans = (outcome: string): Promise<number> => cluster.metric(via, `raftblock_gateway_hole_scans_total{outcome="${outcome}"}`);
  const [requestsBefore, scansBefore] = [await requests(), await scans('answered')];
  const started = Date.now();
  const entries = await nbdinfoMap(cluster.nbdUri(via), 120_000);
  const ms = Date.now() - started;
  const blockStatusRequests = (await requests()) - requestsBefore;
  const answeredScans = (await scans('answered')) - scansBefore;
  t.diagnostic(
    `nbdinfo --map of ${extentCount} extents (${pgCount} PGs): ${ms} ms, ${blockStatusRequests} block status requests, ` +
      `${answeredScans} hole scans, at most ${blockStatusRequests + answeredScans * pgCount} PG calls`,
  );

  const hole = 3;
  const data = 0;
  assert.deepEqual(entries, [
    { offset: 0, length: B, type: hole },
    { offset: B, length: B, type: data },
    { offset: 2 * B, length: written[1] - 2 * B, type: hole },
    { offset: written[1], length: B, type: data },
    { offset: written[1] + B, length: written[2] - written[1] - B, type: hole },
    { offset: written[2], length: B, type: data },
  ]);
  // Each request answers a hole up to the next block written or up to what the client asked
  // at once (at most 4 GiB), and the extents holding data take one or two more each.
  assert.ok(blockStatusRequests > 0 && blockStatusRequests <= 64, `${blockStatusRequests} block status requests for ${extentCount} extents`);
  assert.ok(answeredScans > 0, 'no hole scan answered');
  for (const outcome of ['busy', 'refused', 'timed_out', 'failed', 'client_gone']) assert.equal(await scans(outcome), 0, `a hole scan ended ${outcome}`);
});
