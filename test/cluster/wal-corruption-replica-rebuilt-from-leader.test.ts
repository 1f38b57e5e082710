/**
 * A replica whose WAL is damaged in the middle of a PG's log (a flipped byte in an
 * acknowledged entry, valid batches after it) is not trusted with that log: the node comes
 * back with the PG held out of replication and elections, rebuilds it from the leader's
 * snapshot (chunked pull), and ends with the same bytes as the other replicas, no longer
 * flagged, and serving as a follower again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { maxPgsPerPool } from '../../src/cluster/map.js';
import { metric } from '../helpers/hand-peer.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { requirePythonNbd, systemPython } from './io.js';

const batchMagic = 0x42574252;
const segmentHeaderBytes = 4096;
const batchHeaderBytes = 32;
const recordHeaderBytes = 40;
/** The node's maxBatchesInFlight: a bad batch followed by a valid one this many later is corruption. */
const batchesInFlight = 4;

interface Batch {
  offset: number;
  seq: number;
  groups: Set<number>;
  /** Offset of the payload of its first PG entry record with a payload, or -1. */
  pgPayload: number;
}

/** The valid batches of one WAL segment file, in log order (see src/wal/format.ts). */
function batchesOf(bytes: Buffer): Batch[] {
  const salt = bytes.readUInt32LE(16);
  const out: Batch[] = [];
  let at = segmentHeaderBytes;
  while (at + batchHeaderBytes <= bytes.length) {
    if (bytes.readUInt32LE(at) !== batchMagic || bytes.readUInt32LE(at + 8) !== salt) break;
    const batchBytes = bytes.readUInt32LE(at + 12);
    const seq = bytes.readUInt32LE(at + 16) + bytes.readUInt32LE(at + 20) * 2 ** 32;
    const count = bytes.readUInt32LE(at + 24);
    if (batchBytes === 0 || (out.length > 0 && seq !== out[out.length - 1].seq + 1)) break;
    const b: Batch = { offset: at, seq, groups: new Set(), pgPayload: -1 };
    let r = at + batchHeaderBytes;
    for (let i = 0; i < count; i++) {
      const payload = bytes.readUInt32LE(r);
      const kind = bytes.readUInt8(r + 8);
      const group = bytes.readUInt32LE(r + 12);
      b.groups.add(group);
      if (kind === 1 && group >= maxPgsPerPool && payload > 64 && b.pgPayload === -1) b.pgPayload = r + recordHeaderBytes + 32;
      r += Math.ceil((recordHeaderBytes + payload) / 8) * 8;
    }
    out.push(b);
    at += batchBytes;
  }
  return out;
}


test('a replica whose WAL is corrupt in the middle of a PG log is rebuilt from the leader', { timeout: 90_000 }, async (t) => {
  if (!requirePythonNbd(t)) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 2, volumes: [{ name: 'vol0', sizeBytes: 16 * 1024 * 1024, extentBytes: 1024 * 1024 }] });
  const write = (via: number, seed: number): void => {
    const r = spawnSync(
      systemPython,
      ['-c', ['import nbd', 'h = nbd.NBD()', `h.connect_uri(${JSON.stringify(cluster.nbdUri(via))})`, 'for i in range(300):', `    h.pwrite(bytes([(i + ${seed}) % 251 + 1]) * 4096, (i * 7919 % 4096) * 4096)`, 'h.shutdown()'].join('\n')],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, `client: ${r.stderr}`);
  };
  write(1, 0);
  const victim = cluster.node(3);
  await victim.kill9();

  // Flip a byte inside a PG entry of a batch that only PG entries share, with enough valid
  // batches after it that recovery must call it corruption (not a torn tail).
  const walDir = join(victim.dir, 'data', 'wal');
  let flipped: { file: string; group: number[]; seq: number } | undefined;
  for (const name of readdirSync(walDir).sort()) {
    const path = join(walDir, name);
    const bytes = readFileSync(path);
    const batches = batchesOf(bytes);
    const last = batches.at(-1)?.seq ?? 0;
    const candidates = batches.filter((b) => b.pgPayload !== -1 && !b.groups.has(0) && b.seq + batchesInFlight + 2 <= last);
    const chosen = candidates[Math.floor(candidates.length / 2)];
    if (!chosen) continue;
    bytes[chosen.pgPayload] ^= 0x5a;
    writeFileSync(path, bytes);
    flipped = { file: name, group: [...chosen.groups], seq: chosen.seq };
  }
  assert.ok(flipped, 'a batch of PG entries in the middle of the WAL to damage');

  await victim.start();
  await waitFor('the damaged replica repaired', 40_000, async () => ((await metric(victim.addrs.http, 'raftblock_raft_replicas_repaired_total')) >= 1 ? true : undefined));
  assert.match(readFileSync(victim.logPath, 'utf8'), /WAL corruption in the middle of the log/);
  await waitFor('no group of node 3 flagged for repair', 20_000, async () => {
    const s = await cluster.status(3);
    return s.groups.length > 0 && s.groups.every((g) => !g.needsRepair) ? true : undefined;
  });

  // It replicates again: more writes, then every replica holds the same bytes.
  write(3, 17);
  assert.equal(await cluster.waitReplicasIdentical(30_000), 2, `${JSON.stringify(flipped)}\n${victim.logTail(15)}`);
  const s = await cluster.status(3);
  for (const g of s.groups.filter((x) => flipped!.group.includes(x.groupId))) assert.ok(g.appliedIndex > 0 && !g.needsRepair, `group ${g.groupId} on node 3: ${JSON.stringify(g)}`);
});
