/**
 * `raftblock status` checks every answer it reads from a socket: a node whose /v1/status answer
 * has another shape, or that sends more than any answer can be, is shown unreachable with the
 * reason while every other node is still shown; a malformed map is a clear error; strings a
 * table prints are made printable and bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError } from '../../src/common/errors.js';
import { maxStoreOpsLevel } from '../../src/store/ops.js';
import type { NodeStatus } from '../../src/cluster/admin-client.js';
import { checkNodeStatus, maxVersionChars } from '../../src/cluster/admin-answers.js';
import { applyAll } from '../helpers/map.js';
import { emptyMap, type ClusterMap } from '../../src/cluster/map.js';
import { runCli } from '../helpers/cli.js';
import { answerJson, httpNode } from '../helpers/http-node.js';

const full: NodeStatus = {
  nodeId: 2,
  clusterId: 'c0ffee-1',
  epoch: 7,
  uptimeMs: 1234,
  version: '0.1.0',
  storeOpsLevel: 3,
  groups: [
    { groupId: 0, role: 'leader', term: 4, leader: 2, commitIndex: 90, appliedIndex: 90, lastIndex: 91, voters: [1, 2, 3] },
    {
      groupId: 65536,
      role: 'learner',
      term: 2,
      leader: 0,
      commitIndex: 5,
      appliedIndex: 4,
      lastIndex: 6,
      voters: [1, 3],
      learners: [2],
      votersOutgoing: [1, 3, 4],
      configurationPending: true,
      needsRepair: true,
      moveHeld: 'node 4 runs an older build',
    },
  ],
};

test('a well-formed answer passes unchanged, with or without the optional fields', () => {
  assert.deepEqual(checkNodeStatus(JSON.parse(JSON.stringify(full))), full);
  const bare = { nodeId: 1, epoch: 0, uptimeMs: 0, groups: [] };
  assert.deepEqual(checkNodeStatus(bare), bare);
  // Any level a frame may carry (frame.ts) is one a status answer may show.
  assert.equal(checkNodeStatus({ ...bare, storeOpsLevel: maxStoreOpsLevel }).storeOpsLevel, maxStoreOpsLevel);
  // JSON's null reads as absent (a build that writes null for "none").
  assert.deepEqual(checkNodeStatus({ ...bare, version: null, storeOpsLevel: null, clusterId: null }), bare);
});

test('a malformed answer is a ProtocolError naming the field', () => {
  const g0 = full.groups[0];
  const cases: [unknown, RegExp][] = [
    [null, /the answer is not an object \(got null\)/],
    [[], /the answer is not an object \(got an array\)/],
    [{ ...full, groups: 'x' }, /groups is not an array \(got "x"\)/],
    [{ ...full, groups: undefined }, /groups is not an array \(got absent\)/],
    [{ ...full, nodeId: 0 }, /nodeId is not an integer in 1\.\.2147483647 \(got 0\)/],
    [{ ...full, nodeId: '2' }, /nodeId is not an integer/],
    [{ ...full, epoch: -1 }, /epoch is not an integer/],
    [{ ...full, uptimeMs: 1.5 }, /uptimeMs is not an integer/],
    [{ ...full, clusterId: 'no spaces' }, /clusterId is no cluster id/],
    [{ ...full, version: 3 }, /version is not a string \(got 3\)/],
    [{ ...full, storeOpsLevel: 0 }, /storeOpsLevel is not an integer in 1\.\.65535/],
    [{ ...full, storeOpsLevel: 0x10000 }, /storeOpsLevel is not an integer in 1\.\.65535/],
    [{ ...full, groups: [null] }, /groups\[0\] is not an object/],
    [{ ...full, groups: [{ ...g0, role: 'king' }] }, /groups\[0\]\.role is no Raft role \(got "king"\)/],
    [{ ...full, groups: [{ ...g0, term: '4' }] }, /groups\[0\]\.term is not an integer/],
    [{ ...full, groups: [{ ...g0, leader: -1 }] }, /groups\[0\]\.leader is not an integer in 0\.\./],
    [{ ...full, groups: [g0, { ...g0, voters: {} }] }, /groups\[1\]\.voters is not an array \(got an object\)/],
    [{ ...full, groups: [{ ...g0, voters: [1, 0] }] }, /groups\[0\]\.voters\[1\] is not an integer/],
    [{ ...full, groups: [{ ...g0, learners: 'all' }] }, /groups\[0\]\.learners is not an array/],
    [{ ...full, groups: [{ ...g0, needsRepair: 'yes' }] }, /groups\[0\]\.needsRepair is not true or false/],
    [{ ...full, groups: [{ ...g0, moveHeld: 5 }] }, /groups\[0\]\.moveHeld is not a string/],
  ];
  for (const [answer, message] of cases) {
    assert.throws(
      () => checkNodeStatus(answer),
      (err: unknown) => err instanceof ProtocolError && err.code === 'PROTOCOL_ERROR' && message.test(err.message),
      `${JSON.stringify(answer)?.slice(0, 80)} should fail with ${message}`,
    );
  }
});

test("a node's version and held-move reason are made printable and bounded", () => {
  const s = checkNodeStatus({ ...full, version: `1.0\u001b[2J\u202e${'x'.repeat(200)}`, groups: [{ ...full.groups[1], moveHeld: `a\nb${'y'.repeat(600)}` }] });
  assert.ok(s.version !== undefined);
  assert.equal([...s.version].length, maxVersionChars);
  assert.match(s.version, /^1\.0 \[2J x+…$/);
  assert.ok(s.groups[0].moveHeld?.startsWith('a b'));
  assert.equal([...(s.groups[0].moveHeld ?? '')].length, 500);
});

test('the status command shows a node with a malformed or oversized answer as unreachable, and every other node', async (t) => {
  let map: ClusterMap = emptyMap();
  const nodes: string[] = [];
  // Node 1 answers well; node 2 answers another shape; node 3 streams 65 MiB of a JSON string.
  nodes.push(await httpNode(t, (req, res) => answerJson(res, 200, req.url === '/v1/map' ? map : { ...full, nodeId: 1, clusterId: undefined, groups: [] })));
  nodes.push(await httpNode(t, (_req, res) => answerJson(res, 200, { nodeId: 2, epoch: 1, uptimeMs: 5, groups: { '0': 'leader' } })));
  nodes.push(
    await httpNode(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 'a');
      let sent = 0;
      res.write('"');
      const more = (): void => {
        while (sent < 65) {
          sent++;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end('"');
      };
      res.on('error', () => undefined);
      more();
    }),
  );
  map = applyAll(
    emptyMap(),
    ...nodes.map((n, i) => ({ type: 'addNode' as const, id: i + 1, addresses: { peer: `127.0.0.1:${30001 + i}`, nbd: `127.0.0.1:${31001 + i}`, http: n }, labels: { zone: `z${i + 1}` } })),
  );

  const text = await runCli(['status', '--server', nodes[0]]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /nodes 1\/3 reachable/);
  assert.match(text.stdout, /^1 +in +yes /m, text.stdout);
  assert.match(text.stdout, new RegExp(`^2 +in +no \\(GET /v1/status on ${nodes[1]}: malformed status answer: groups is not an array \\(got an object\\)\\)`, 'm'), text.stdout);
  assert.match(text.stdout, new RegExp(`^3 +in +no \\(GET /v1/status on ${nodes[2]}: the answer is over the limit of 67108864 bytes\\)`, 'm'), text.stdout);

  const asJson = await runCli(['status', '--server', nodes[0], '--json']);
  assert.equal(asJson.code, 0, asJson.stderr);
  const parsed = JSON.parse(asJson.stdout) as { nodes: { id: number; reachable: boolean; version?: string }[] };
  assert.deepEqual(
    parsed.nodes.map((n) => [n.id, n.reachable, n.version]),
    [
      [1, true, '0.1.0'],
      [2, false, undefined],
      [3, false, undefined],
    ],
  );
});

test('a malformed map from the server asked is a clear error, not a crash', async (t) => {
  const bad = await httpNode(t, (_req, res) => answerJson(res, 200, { format: 1, epoch: 3, nodes: 'none', pools: [], volumes: [] }));
  const r = await runCli(['status', '--server', bad]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`GET /v1/map on ${bad}: malformed map answer: not a cluster map`), r.stderr);
  assert.doesNotMatch(r.stderr, /TypeError|at .*\.js:\d+/, 'no stack trace');
});
