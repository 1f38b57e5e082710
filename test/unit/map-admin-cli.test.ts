/**
 * The admin CLI (`raftblock volume ...`, `raftblock status`) against stub nodes that speak the
 * admin HTTP API of src/cluster/admin-client.ts over real sockets, backed by the real map state
 * machine. Proves the CLI's requests, outputs, exit codes and redirects; the same commands run
 * against real nodes in test/cluster.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { zonedMap } from '../helpers/map.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AdminClient,
  httpStatusOf,
  mergeClusterStatus,
  type ClusterStatus,
  type GroupStatus,
  type NodeStatus,
  type VolumeList,
  type VolumeResponse,
} from '../../src/cluster/admin-client.js';
import { allGroups, applyCommand, emptyMap, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';
import { RaftblockError } from '../../src/common/errors.js';
import { runCli, type CliResult as Cli } from '../helpers/cli.js';

const cli = (...args: string[]): Promise<Cli> => runCli(args, { timeoutMs: 20_000, env: { ...process.env, RAFTBLOCK_SERVER: '' } });

/** Three stub nodes sharing one map; node `redirector` answers writes with NOT_LEADER. */
class StubCluster {
  map: ClusterMap = emptyMap();
  servers: Server[] = [];
  requests: string[] = [];
  redirector = -1;
  rebuildAnswerMs = 0;

  async start(t: TestContext, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const server = createServer((req, res) => void this.handle(i + 1, req, res));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      this.servers.push(server);
    }
    t.after(() => Promise.all(this.servers.map((s) => new Promise((r) => s.close(r)))));
    for (let i = 0; i < count; i++) {
      this.apply({ type: 'addNode', id: i + 1, addresses: { peer: `127.0.0.1:${31000 + i}`, nbd: `127.0.0.1:${32000 + i}`, http: this.addr(i + 1) }, labels: { zone: `z${i}` } });
    }
    this.apply({ type: 'createPool', name: 'default', replicas: 3, pgCount: 4, failureDomain: 'zone' });
  }

  addr(nodeId: number): string {
    return `127.0.0.1:${(this.servers[nodeId - 1].address() as AddressInfo).port}`;
  }

  apply(c: MapCommand): ReturnType<typeof applyCommand> {
    const r = applyCommand(this.map, c);
    if (r.ok) this.map = r.map;
    return r;
  }

  private async handle(nodeId: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    this.requests.push(`${nodeId} ${req.method} ${req.url}${body ? ' ' + JSON.stringify(body) : ''}`);
    const send = (status: number, value: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    const fail = (code: string, message: string, leader?: string): void => send(httpStatusOf(code), { error: { code, message, ...(leader ? { leader } : {}) } });
    const change = (c: MapCommand, status: number): void => {
      if (nodeId === this.redirector) return fail('NOT_LEADER', 'not the metadata leader', this.addr(1));
      const r = this.apply(c);
      if (!r.ok) return fail(r.error.code, r.error.message);
      // As the node's API answers an identical create: 200 and changed: false.
      if (!r.changed) return send(status === 201 ? 200 : status, { epoch: r.map.epoch, volume: r.volume, pool: r.pool, changed: false });
      send(status, { epoch: r.map.epoch, volume: r.volume });
    };
    const url = req.url ?? '';
    let m: RegExpExecArray | null;
    if (req.method === 'GET' && url === '/v1/map') return send(200, this.map);
    if (req.method === 'GET' && url === '/v1/volumes') return send(200, { epoch: this.map.epoch, volumes: this.map.volumes });
    if (req.method === 'GET' && url === '/v1/status') {
      const groups: GroupStatus[] = allGroups(this.map)
        .filter((g) => g.replicas.includes(nodeId))
        .map((g) => ({
          groupId: g.groupId,
          role: g.replicas[0] === nodeId ? 'leader' : 'follower',
          term: 3,
          leader: g.replicas[0],
          commitIndex: 500,
          appliedIndex: nodeId === 2 ? 100 : 500,
          lastIndex: 500,
          voters: g.replicas,
        }));
      const status: NodeStatus = { nodeId, epoch: this.map.epoch, uptimeMs: 1000, groups };
      return send(200, status);
    }
    if (req.method === 'POST' && (m = /^\/v1\/groups\/(\d+)\/rebuild$/.exec(url))) {
      // As a node answers once the PG's leader has agreed: here after `rebuildAnswerMs`.
      await new Promise((r) => setTimeout(r, this.rebuildAnswerMs));
      return send(200, { groupId: Number(m[1]), nodeId, leader: allGroups(this.map).find((g) => g.groupId === Number(m![1]))!.replicas[0], commitIndex: 400 });
    }
    if (req.method === 'POST' && url === '/v1/volumes') return change({ type: 'createVolume', ...body }, 201);
    if (req.method === 'POST' && (m = /^\/v1\/volumes\/([^/]+)\/resize$/.exec(url))) {
      return change({ type: 'resizeVolume', name: decodeURIComponent(m[1]), ...body }, 200);
    }
    if (req.method === 'DELETE' && (m = /^\/v1\/volumes\/([^/]+)$/.exec(url))) return change({ type: 'deleteVolume', name: decodeURIComponent(m[1]) }, 200);
    fail('NOT_FOUND', `no route ${req.method} ${url}`);
  }
}

test('volume create, list, resize and delete talk to the admin API and print text or JSON', async (t) => {
  const stub = new StubCluster();
  await stub.start(t, 3);
  const server = ['--server', stub.addr(1)];
  let r = await cli('volume', 'create', 'vol0', '--size', '10G', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /created volume vol0: 10 GiB in pool default \(id 1, 4 MiB extents\) at map epoch 5/);
  r = await cli('volume', 'create', 'small', '--size', '64M', '--extent-size', '1M', '--pool', 'default', '--json', ...server);
  assert.equal(r.code, 0, r.stderr);
  const created = JSON.parse(r.stdout) as VolumeResponse;
  assert.deepEqual(created.volume, { id: 2, name: 'small', pool: 'default', sizeBytes: 64 << 20, extentBytes: 1 << 20 });
  r = await cli('volume', 'list', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.split(/\s+/)), [
    ['NAME', 'ID', 'POOL', 'SIZE', 'EXTENT'],
    ['vol0', '1', 'default', '10', 'GiB', '4', 'MiB'],
    ['small', '2', 'default', '64', 'MiB', '1', 'MiB'],
  ]);
  r = await cli('volume', 'resize', 'vol0', '--size', '12G', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /resized volume vol0: 12 GiB/);
  r = await cli('volume', 'resize', 'vol0', '--size', '1G', '--shrink', '--json', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as VolumeResponse).volume.sizeBytes, 1 << 30);
  r = await cli('volume', 'delete', 'small', ...server);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /deleted volume small/);
  r = await cli('volume', 'list', '--json', ...server);
  const list = JSON.parse(r.stdout) as VolumeList;
  assert.deepEqual(list.volumes.map((v) => v.name), ['vol0']);
  assert.equal(list.epoch, stub.map.epoch);
  assert.ok(stub.requests.some((q) => q.includes('POST /v1/volumes/vol0/resize {"sizeBytes":1073741824,"allowShrink":true}')), stub.requests.join('\n'));
});

test('pool repair waits for a node that takes longer than the admin timeout to have its rebuild agreed (its leader settling on a slow tick)', async (t) => {
  const stub = new StubCluster();
  await stub.start(t, 3);
  stub.rebuildAnswerMs = 600;
  const pg = allGroups(stub.map).find((g) => g.replicas.includes(3) && g.replicas[0] !== 3)!;
  const client = new AdminClient(stub.addr(1), { timeoutMs: 200 });
  const r = await client.repairPg({ pool: 'default', pgIndex: pg.pgIndex, nodeId: 3, force: true, pollMs: 20, timeoutMs: 5000 });
  assert.equal(r.nodeId, 3);
  assert.equal(r.leader, pg.replicas[0]);
  assert.ok(r.elapsedMs >= 600, `answered in ${r.elapsedMs} ms`);
  // The repair's own timeout still bounds the call.
  stub.rebuildAnswerMs = 3000;
  await assert.rejects(client.repairPg({ pool: 'default', pgIndex: pg.pgIndex, nodeId: 3, force: true, pollMs: 20, timeoutMs: 500 }), (err: Error & { code?: string }) => err.code === 'TIMED_OUT');
});

test('bad input and refused changes exit non-zero with a clear message', async (t) => {
  const stub = new StubCluster();
  await stub.start(t, 3);
  const server = ['--server', stub.addr(1)];
  assert.equal((await cli('volume', 'create', 'vol0', '--size', '1G', ...server)).code, 0);
  // The identical create again (as a retry would send it) is done, not refused.
  const again = await cli('volume', 'create', 'vol0', '--size', '1G', ...server);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /volume vol0: 1 GiB in pool default .* already exists as asked/);
  const before = stub.requests.length;
  const cases: [string[], number, RegExp][] = [
    [['volume', 'create', 'x', '--size', '1.5G'], 2, /size must be a number of bytes.*\[INVALID_ARGUMENT\]/],
    [['volume', 'create', 'x', '--size', '0'], 2, /more than 0 \[INVALID_ARGUMENT\]/],
    [['volume', 'create', 'x'], 1, /required option '--size/],
    [['volume', 'create', '--size', '1G'], 1, /missing required argument 'name'/],
  ];
  for (const [args, code, message] of cases) {
    const r = await cli(...args, ...server);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  assert.equal(stub.requests.length, before, 'input the CLI can judge must not reach the server');
  const refused: [string[], RegExp][] = [
    [['volume', 'create', 'vol0', '--size', '2G'], /volume vol0 exists \(1073741824 bytes in pool default, extents of 4194304 bytes\) \[ALREADY_EXISTS\]/],
    [['volume', 'create', 'odd', '--size', '1000'], /multiple of 4096.*\[INVALID_ARGUMENT\]/],
    [['volume', 'create', 'y', '--size', '1G', '--pool', 'nope'], /pool nope does not exist \[NOT_FOUND\]/],
    [['volume', 'resize', 'vol0', '--size', '512M'], /shrink.*\[INVALID_ARGUMENT\]/],
    [['volume', 'delete', 'ghost'], /volume ghost does not exist \[NOT_FOUND\]/],
  ];
  for (const [args, message] of refused) {
    const r = await cli(...args, ...server);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const gone = await cli('volume', 'list', '--server', '127.0.0.1:1');
  assert.equal(gone.code, 2);
  assert.match(gone.stderr, /cannot reach raftblock node at 127.0.0.1:1: ECONNREFUSED \[UNAVAILABLE\]/);
  assert.equal((await cli('volume', 'list', '--server', 'nonsense')).code, 2);
});

test('a change sent to a node that is not the metadata leader follows the leader hint', async (t) => {
  const stub = new StubCluster();
  await stub.start(t, 3);
  stub.redirector = 2;
  const r = await cli('volume', 'create', 'vol9', '--size', '1G', '--server', stub.addr(2));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(stub.requests.filter((q) => q.includes('POST')).map((q) => q.split(' ')[0]), ['2', '1']);
  assert.deepEqual(stub.map.volumes.map((v) => v.name), ['vol9']);
});

test('status lists nodes and groups with leader, term, indexes, and flags lagging or unreachable replicas', async (t) => {
  const stub = new StubCluster();
  await stub.start(t, 3);
  let r = await cli('status', '--json', '--server', stub.addr(1));
  assert.equal(r.code, 0, r.stderr);
  let s = JSON.parse(r.stdout) as ClusterStatus;
  assert.equal(s.summary.nodesReachable, 3);
  // Node 2 applied 100 of 500 in every PG; group 0 is not run by the stubs: unavailable.
  assert.equal(s.summary.lagging, 4);
  assert.equal(s.summary.unavailable, 1);
  const pg = s.groups.find((g) => g.groupId !== 0)!;
  assert.equal(pg.term, 3);
  assert.equal(pg.commitIndex, 500);
  assert.equal(pg.leader, stub.map.pools[0].pgs[pg.pgIndex].replicas[0]);
  assert.match(pg.reason ?? '', /2 applied 100/);
  await new Promise((res) => stub.servers[2].close(res));
  stub.servers[2].closeAllConnections();
  r = await cli('status', '--server', stub.addr(1));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /nodes 2\/3 reachable/);
  assert.match(r.stdout, /^3\s+in\s+no \(cannot reach raftblock node at [\d.:]+: ECONNREFUSED/m);
  assert.match(r.stdout, /^GROUP\s+POOL\s+PG\s+REPLICAS\s+LEADER\s+TERM\s+COMMIT\s+APPLIED\s+HEALTH$/m);
  r = await cli('status', '--json', '--problems', '--server', stub.addr(1));
  s = JSON.parse(r.stdout) as ClusterStatus;
  const led3 = s.groups.filter((g) => g.groupId !== 0 && g.replicas[0] === 3);
  for (const g of led3) assert.equal(g.health, 'unavailable', 'a group whose only leader is unreachable has no leader');
  const down = await cli('status', '--server', '127.0.0.1:1');
  assert.equal(down.code, 2);
});

test('merged status: a group without a quorum of reachable replicas is unavailable even with a leader', () => {
  const map = zonedMap(3, 1);
  const replicas = map.pools[0].pgs[0].replicas;
  const group = (role: GroupStatus['role'], term: number): GroupStatus => ({
    groupId: 65536, role, term, leader: replicas[0], commitIndex: 10, appliedIndex: 10, lastIndex: 10, voters: replicas,
  });
  const statuses = new Map<number, NodeStatus | Error>([
    [replicas[1], new RaftblockError('UNAVAILABLE', 'down')],
    [replicas[2], new RaftblockError('UNAVAILABLE', 'down')],
  ]);
  statuses.set(replicas[0], {
    nodeId: replicas[0],
    epoch: 5,
    uptimeMs: 1,
    groups: [{ ...group('leader', 2), groupId: 0, voters: [1, 2, 3] }, group('leader', 4)],
  });
  const s = mergeClusterStatus('x', map, statuses);
  const meta = s.groups.find((g) => g.groupId === 0)!;
  assert.deepEqual(meta.replicas, [1, 2, 3], 'group 0 members come from the voters its leader reports');
  assert.equal(meta.health, 'unavailable');
  const pg = s.groups.find((g) => g.groupId === 65536)!;
  assert.equal(pg.health, 'unavailable');
  assert.equal(pg.reason, '1 of 3 replicas reachable');
  // An old leader (lower term) does not hide the new one.
  statuses.set(replicas[1], { nodeId: replicas[1], epoch: 5, uptimeMs: 1, groups: [group('leader', 5)] });
  const s2 = mergeClusterStatus('x', map, statuses);
  const pg2 = s2.groups.find((g) => g.groupId === 65536)!;
  assert.equal(pg2.leader, replicas[1]);
  assert.equal(pg2.term, 5);
  assert.equal(pg2.health, 'lagging');
});

/** A node's status holding only its group-0 replica: follower at term 3, applied to 40, voters 1-3, unless `over` says otherwise. */
function metaStatus(nodeId: number, over: Partial<GroupStatus>): NodeStatus {
  return {
    nodeId,
    epoch: 5,
    uptimeMs: 1,
    groups: [{ groupId: 0, role: 'follower', term: 3, leader: 1, commitIndex: 40, appliedIndex: 40, lastIndex: 40, voters: [1, 2, 3], ...over }],
  };
}

test('merged status: a group-0 member held out for repair is named as such, not as unreachable', () => {
  const map = zonedMap(3, 1);
  const statuses = new Map<number, NodeStatus | Error>([
    [1, metaStatus(1, { role: 'leader' })],
    [2, metaStatus(2, {})],
    // What a node whose group-0 replica is held out reports (StorageNode.status).
    [3, metaStatus(3, { role: 'follower', term: 0, leader: 0, commitIndex: 0, appliedIndex: 0, lastIndex: 0, voters: [], needsRepair: true })],
  ]);
  const g0 = mergeClusterStatus('x', map, statuses).groups.find((g) => g.groupId === 0)!;
  assert.deepEqual(g0.replicas, [1, 2, 3], 'members still come from the leader');
  assert.equal(g0.health, 'lagging');
  assert.equal(g0.reason, '3 needs repair');
});

test('merged status: group 0 members come from the newest view, not from a replica that answered first while catching up', () => {
  const map = zonedMap(3, 1);
  for (const order of [
    [2, 1, 3],
    [2, 3, 1],
    [1, 2, 3],
  ]) {
    const byId: Record<number, NodeStatus> = {
      // Same term, an older configuration: it has not appended the entries adding 2 and 3 yet.
      2: metaStatus(2, { commitIndex: 3, appliedIndex: 3, lastIndex: 3, voters: [1] }),
      1: metaStatus(1, { role: 'leader' }),
      3: metaStatus(3, { lastIndex: 39, appliedIndex: 39 }),
    };
    const statuses = new Map<number, NodeStatus | Error>(order.map((id) => [id, byId[id]]));
    const g0 = mergeClusterStatus('x', map, statuses).groups.find((g) => g.groupId === 0)!;
    assert.deepEqual(g0.replicas, [1, 2, 3], `answers in order ${order.join(',')}`);
    assert.equal(g0.members.find((m) => m.nodeId === 2)?.appliedIndex, 3, 'the replica catching up is seen behind');
  }
  // Without a leader the longest log wins at the same term.
  const statuses = new Map<number, NodeStatus | Error>([
    [2, metaStatus(2, { lastIndex: 3, voters: [1] })],
    [3, metaStatus(3, { lastIndex: 39 })],
  ]);
  assert.deepEqual(mergeClusterStatus('x', map, statuses).groups.find((g) => g.groupId === 0)!.replicas, [1, 2, 3]);
});

test('merged status: group 0 is not ok while its leader reports a membership change under way (joint or uncommitted)', () => {
  const map = zonedMap(3, 1);
  const statuses = (leaderOver: Partial<GroupStatus>): Map<number, NodeStatus | Error> =>
    new Map<number, NodeStatus | Error>([
      [1, metaStatus(1, { role: 'leader', ...leaderOver })],
      [2, metaStatus(2, {})],
      [3, metaStatus(3, {})],
    ]);
  // Group 0 grew from node 1 alone to three voters: joint, its outgoing side node 1.
  const joint = mergeClusterStatus('x', map, statuses({ votersOutgoing: [1], configurationPending: true })).groups.find((g) => g.groupId === 0)!;
  assert.deepEqual(joint.replicas, [1, 2, 3]);
  assert.equal(joint.health, 'lagging');
  assert.match(joint.reason ?? '', /membership change is under way/);
  // Left the joint configuration, but that entry is not committed yet: still not ok.
  assert.equal(mergeClusterStatus('x', map, statuses({ configurationPending: true })).groups.find((g) => g.groupId === 0)!.health, 'lagging');
  // Settled.
  assert.equal(mergeClusterStatus('x', map, statuses({})).groups.find((g) => g.groupId === 0)!.health, 'ok');
});
