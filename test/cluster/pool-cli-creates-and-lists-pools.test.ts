/**
 * `raftblock pool create|list` against real nodes: a pool created through one node is listed
 * by every node, its placement groups start with their replicas on distinct fault domains and
 * elect leaders, a volume placed in it is served; a duplicate name and a replication factor
 * the fault domains cannot hold are refused with their stable codes (exit 2).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PoolSummary } from '../../src/cli/commands/pool.js';
import { pgGroupId } from '../../src/cluster/map.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { runCli, type CliResult } from '../helpers/cli.js';

const cli = (...args: string[]): Promise<CliResult> => runCli(args);

test('pool commands create and list pools on a real cluster', { timeout: 120_000 }, async (t) => {
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 2 });
  const via = (id: number): string[] => ['--server', cluster.node(id).addrs.http];

  let r = await cli('pool', 'create', 'fast', '--replicas', '2', '--pgs', '4', '--domain', 'host', '--json', ...via(2));
  assert.equal(r.code, 0, r.stderr);
  const created = JSON.parse(r.stdout) as { epoch: number; pool: PoolSummary };
  assert.deepEqual({ ...created.pool, id: 0 }, { id: 0, name: 'fast', replicas: 2, pgCount: 4, failureDomain: 'host', volumes: 0 });

  r = await cli('pool', 'create', 'fast', '--replicas', '3', '--pgs', '1', ...via(3));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /ALREADY_EXISTS/);
  r = await cli('pool', 'create', 'wide', '--replicas', '4', '--pgs', '1', '--domain', 'zone', ...via(1));
  assert.equal(r.code, 2, 'four replicas on three zones');
  assert.match(r.stderr, /PLACEMENT_IMPOSSIBLE/);
  r = await cli('pool', 'create', 'bad', '--replicas', 'two', '--pgs', '1', ...via(1));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /INVALID_ARGUMENT/);

  // A volume in the new pool: its PGs run on two distinct hosts and serve it.
  r = await cli('volume', 'create', 'v-fast', '--size', '8M', '--pool', 'fast', ...via(1));
  assert.equal(r.code, 0, r.stderr);
  await waitFor('every node lists the pool with its volume', 20_000, async () => {
    for (const n of cluster.nodes) {
      const out = await cli('pool', 'list', '--json', ...via(n.id));
      if (out.code !== 0) return undefined;
      const list = JSON.parse(out.stdout) as { epoch: number; pools: PoolSummary[] };
      const fast = list.pools.find((p) => p.name === 'fast');
      if (!fast || fast.volumes !== 1 || !list.pools.some((p) => p.name === 'default' && p.volumes === 1)) return undefined;
    }
    return true;
  });
  r = await cli('pool', 'list', ...via(3));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^NAME\s+ID\s+REPLICAS\s+PGS\s+DOMAIN\s+VOLUMES$/m);
  assert.match(r.stdout, /^fast\s+\d+\s+2\s+4\s+host\s+1$/m);
  assert.match(r.stdout, /^default\s+\d+\s+3\s+2\s+zone\s+1$/m);

  const map = await cluster.map();
  const pool = map.pools.find((p) => p.name === 'fast')!;
  const status = await cluster.waitLeaders();
  for (let i = 0; i < pool.pgCount; i++) {
    const g = status.groups.find((x) => x.groupId === pgGroupId(pool.id, i));
    assert.ok(g && g.leader > 0, `PG ${i} of fast has no leader`);
    assert.equal(new Set(g.replicas).size, 2);
  }
});
