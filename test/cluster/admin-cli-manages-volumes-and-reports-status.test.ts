/**
 * The admin CLI against real nodes: volumes created, listed, resized and deleted through any
 * node (changes go through group 0 and every node sees them), a new volume served over NBD at
 * its size, and `raftblock status` reporting every PG's leader, term and indexes — and a killed
 * node as unreachable with its groups lagging. This cluster runs without a cluster key (the
 * others have one), so the keyless peer transport is covered end to end; each node warns so.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { AdminClient, type ClusterStatus, type VolumeList, type VolumeResponse } from '../../src/cluster/admin-client.js';
import { recordingProxy } from '../helpers/recording-proxy.js';
import { logRecords, TestCluster, waitFor } from '../helpers/cluster.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { requireTools } from '../helpers/tools.js';

const cli = (...args: string[]): Promise<CliResult> => runCli(args);

test('volume commands and status work against a real cluster', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 8, clusterKeyFile: null });
  for (const n of cluster.nodes) assert.equal(logRecords(n, 'no --cluster-key-file: peer connections are not authenticated').length, 1, `node ${n.id} did not warn`);
  const [a, b, c] = cluster.nodes.map((n) => ['--server', n.addrs.http]);

  let r = await cli('volume', 'create', 'data1', '--size', '256M', '--extent-size', '1M', '--json', ...b);
  assert.equal(r.code, 0, r.stderr);
  const created = JSON.parse(r.stdout) as VolumeResponse;
  assert.equal(created.volume.sizeBytes, 256 * 1024 * 1024);
  r = await cli('volume', 'create', 'data1', '--size', '1G', ...c);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /ALREADY_EXISTS/);
  // The identical create (what a node's retry across a group-0 leader change sends) is done.
  r = await cli('volume', 'create', 'data1', '--size', '256M', '--extent-size', '1M', '--json', ...c);
  assert.equal(r.code, 0, r.stderr);
  const again = JSON.parse(r.stdout) as VolumeResponse;
  assert.equal(again.changed, false);
  assert.deepEqual(again.volume, created.volume);

  // Every node learns the change (its map epoch reaches the one the change was applied at).
  await waitFor('every node at the new epoch', 20_000, async () => {
    const lists = await Promise.all(cluster.nodes.map(async (n) => JSON.parse((await cli('volume', 'list', '--json', '--server', n.addrs.http)).stdout) as VolumeList));
    return lists.every((l) => l.epoch >= created.epoch && l.volumes.some((v) => v.name === 'data1')) ? true : undefined;
  });
  const info = await new Promise<string>((resolve) =>
    execFile('nbdinfo', ['--size', cluster.nbdUri(3, 'data1')], { timeout: 20_000 }, (_e, stdout) => resolve(stdout.trim())),
  );
  assert.equal(info, String(256 * 1024 * 1024));

  r = await cli('volume', 'resize', 'data1', '--size', '512M', ...a);
  assert.equal(r.code, 0, r.stderr);
  r = await cli('volume', 'resize', 'data1', '--size', '128M', ...a);
  assert.equal(r.code, 2, 'a shrink without --shrink must be refused');
  r = await cli('volume', 'list', ...c);
  assert.match(r.stdout, /^data1\s+\d+\s+default\s+512 MiB\s+1 MiB$/m);

  r = await cli('status', '--json', ...a);
  assert.equal(r.code, 0, r.stderr);
  let s = JSON.parse(r.stdout) as ClusterStatus;
  assert.equal(s.summary.nodesReachable, 3);
  const pgs = s.groups.filter((g) => g.groupId !== 0);
  assert.equal(pgs.length, 8);
  for (const g of pgs) {
    assert.ok(g.leader > 0 && g.term > 0 && g.commitIndex >= g.appliedIndex && g.appliedIndex > 0, JSON.stringify(g));
    assert.equal(g.members.length, 3);
  }
  assert.ok(s.groups.some((g) => g.groupId === 0 && g.leader > 0), 'group 0 has a leader');

  await lostAnswersAreAnsweredOnce(t, cluster.nodes[0].addrs.http);

  await cluster.node(3).kill9();
  r = await cli('status', ...a);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /nodes 2\/3 reachable/);
  s = JSON.parse((await cli('status', '--json', ...a)).stdout) as ClusterStatus;
  const withNode3 = s.groups.filter((g) => g.groupId !== 0 && g.replicas.includes(3));
  assert.ok(withNode3.length > 0);
  for (const g of withNode3) assert.notEqual(g.health, 'ok', `group ${g.groupId} still ok with node 3 dead`);

  r = await cli('volume', 'delete', 'data1', ...b);
  assert.equal(r.code, 0, r.stderr);
  r = await cli('volume', 'list', '--json', ...a);
  assert.deepEqual((JSON.parse(r.stdout) as VolumeList).volumes.map((v) => v.name), ['vol0']);
});

/**
 * A change whose answer is lost is sent again under its Idempotency-Key and answered as its
 * first attempt was: created (not "already there"), deleted (not NOT_FOUND); the key sent with
 * another request is refused.
 */
async function lostAnswersAreAnsweredOnce(t: TestContext, http: string): Promise<void> {
  const lossy = await recordingProxy(t, http, { dropAnswers: 1 });
  const created = await new AdminClient(lossy.address).createVolume({ name: 'lost1', sizeBytes: 64 * 1024 * 1024 });
  assert.equal(lossy.connections(), 2, 'the first answer was dropped, so the client sent the create again');
  assert.equal(created.changed, undefined, `the repeat was answered as a new identical create, not as the first attempt: ${JSON.stringify(created)}`);
  const lossyDelete = await recordingProxy(t, http, { dropAnswers: 1 });
  const deleted = await new AdminClient(lossyDelete.address).deleteVolume('lost1');
  assert.equal(lossyDelete.connections(), 2);
  assert.equal(deleted.volume.name, 'lost1');
  assert.ok(deleted.epoch > created.epoch);

  // The API itself: a key is one command per method and path; without one, a repeat is new.
  const send = async (method: string, path: string, key?: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`http://${http}${path}`, {
      method,
      headers: { ...(key === undefined ? {} : { 'idempotency-key': key }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  assert.equal((await send('POST', '/v1/volumes', 'k-create-2', { name: 'lost2', sizeBytes: 1 << 26 })).status, 201);
  // The key with another request: refused (not told that lost3 was created), nothing made.
  const reused = await send('POST', '/v1/volumes', 'k-create-2', { name: 'lost3', sizeBytes: 1 << 26 });
  assert.equal(reused.status, 422, JSON.stringify(reused));
  assert.match(JSON.stringify(reused.body), /IDEMPOTENCY_KEY_REUSED/);
  assert.ok(!(await new AdminClient(http).listVolumes()).volumes.some((v) => v.name === 'lost3'), 'a reused key created another volume');
  const first = await send('DELETE', '/v1/volumes/lost2', 'k-delete-2');
  assert.equal(first.status, 200);
  const repeat = await send('DELETE', '/v1/volumes/lost2', 'k-delete-2');
  assert.deepEqual(repeat, first);
  const unkeyed = await send('DELETE', '/v1/volumes/lost2');
  assert.equal(unkeyed.status, 404, JSON.stringify(unkeyed));
  // The create's key again, after the delete: the create's first answer, nothing made anew.
  const stale = await send('POST', '/v1/volumes', 'k-create-2', { name: 'lost2', sizeBytes: 1 << 26 });
  assert.equal(stale.status, 201);
  assert.ok((stale.body.epoch as number) < (first.body.epoch as number));
  assert.ok(!(await new AdminClient(http).listVolumes()).volumes.some((v) => v.name === 'lost2'), 'a repeated key created the volume again');
  const bad = await send('DELETE', '/v1/volumes/vol0', 'has space');
  assert.equal(bad.status, 400);
  assert.match(JSON.stringify(bad.body), /INVALID_ARGUMENT/);
}
