/**
 * Every admin command checks the answer it reads from a socket (admin-answers.ts): an answer of
 * another shape is a clear error naming the endpoint, the node and the first wrong field, never
 * a stack trace or a half-printed result; an error answer's text is made printable and bounded,
 * and a NOT_LEADER hint that is no address is not followed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError } from '../../src/common/errors.js';
import * as answers from '../../src/cluster/admin-answers.js';
import { errorBodyFrom } from '../../src/cluster/admin-client.js';
import { applyAll, zonedMap } from '../helpers/map.js';
import { runCli } from '../helpers/cli.js';
import { answerJson, httpNode } from '../helpers/http-node.js';

/** A real map's pool and volume, as a node's answers carry them. */
const map = applyAll(zonedMap(3, 4), { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 30 });
const pool = JSON.parse(JSON.stringify(map.pools[0])) as (typeof map.pools)[0];
const volume = JSON.parse(JSON.stringify(map.volumes[0])) as (typeof map.volumes)[0];

function rejects(check: (x: unknown) => unknown, answer: unknown, message: RegExp): void {
  assert.throws(
    () => check(answer),
    (err: unknown) => err instanceof ProtocolError && err.code === 'PROTOCOL_ERROR' && message.test(err.message),
    `${JSON.stringify(answer)?.slice(0, 100)} should fail with ${message}`,
  );
}

test('well-formed answers pass unchanged', () => {
  assert.deepEqual(answers.checkVolumeList({ epoch: 9, volumes: [volume] }), { epoch: 9, volumes: [volume] });
  assert.deepEqual(answers.checkVolumeList({ epoch: 0, volumes: [] }), { epoch: 0, volumes: [] });
  assert.deepEqual(answers.checkVolumeResponse({ epoch: 9, volume, changed: false }), { epoch: 9, volume, changed: false });
  const shrinking = { ...volume, discardToBytes: 2 * 2 ** 30 };
  assert.deepEqual(answers.checkVolumeResponse({ epoch: 9, volume: shrinking }), { epoch: 9, volume: shrinking });
  assert.deepEqual(answers.checkPoolResponse({ epoch: 4, pool }), { epoch: 4, pool });
  const reset = { ...pool, pgs: pool.pgs.map((pg, i) => (i === 1 ? { ...pg, resetEpoch: pg.sinceEpoch } : pg)) };
  assert.deepEqual(answers.checkPoolResponse({ epoch: 4, pool: reset }), { epoch: 4, pool: reset });
  assert.deepEqual(answers.checkNodeStateResponse({ epoch: 12 }), { epoch: 12 });
  assert.deepEqual(answers.checkNodeChangeResponse({ epoch: 12, nodeId: 4, metaVoterRemoved: true }), { epoch: 12, nodeId: 4, metaVoterRemoved: true });
  const digest = { groupId: 65537, nodeId: 2, appliedIndex: 40, appliedIndexAfter: 41, digest: 'v2:0123abcdef' };
  assert.deepEqual(answers.checkGroupDigest(digest), digest);
  assert.deepEqual(answers.checkGroupDigest({ groupId: 65537, nodeId: 2, restoring: true }), { groupId: 65537, nodeId: 2, restoring: true });
  const rebuild = { groupId: 65537, nodeId: 2, leader: 1, commitIndex: 77, underWay: true };
  assert.deepEqual(answers.checkRebuildReplicaResponse(rebuild), rebuild);
  // Fields a newer build adds are dropped; JSON's null reads as absent.
  assert.deepEqual(answers.checkNodeStateResponse({ epoch: 3, extra: 'x' }), { epoch: 3 });
  assert.deepEqual(answers.checkVolumeResponse({ epoch: 9, volume: { ...volume, discardToBytes: null }, changed: null }), { epoch: 9, volume });
});

test('a malformed answer is a ProtocolError naming the kind of answer and the field', () => {
  rejects(answers.checkVolumeList, null, /^malformed volume list: the answer is not an object \(got null\)$/);
  rejects(answers.checkVolumeList, { epoch: 1, volumes: {} }, /volumes is not an array \(got an object\)/);
  rejects(answers.checkVolumeList, { epoch: 1, volumes: [volume, { ...volume, name: '\u001b[2J' }] }, /volumes\[1\]\.name is no pool or volume name \(got " \[2J"\)/);
  rejects(answers.checkVolumeList, { epoch: 1, volumes: [{ ...volume, sizeBytes: 4097 }] }, /volumes\[0\]\.sizeBytes is not a multiple of 4096/);
  rejects(answers.checkVolumeList, { epoch: 1, volumes: [{ ...volume, sizeBytes: 2 ** 51 }] }, /volumes\[0\]\.sizeBytes is not an integer in 4096\.\./);
  rejects(answers.checkVolumeList, { epoch: 1, volumes: [{ ...volume, extentBytes: 3 << 20 }] }, /volumes\[0\]\.extentBytes is not a power of two/);
  rejects(answers.checkVolumeList, { epoch: -1, volumes: [] }, /epoch is not an integer/);
  rejects(answers.checkVolumeResponse, { epoch: 1 }, /^malformed volume answer: volume is not an object \(got absent\)$/);
  rejects(answers.checkVolumeResponse, { epoch: 1, volume: { ...volume, pool: 7 } }, /volume\.pool is no pool or volume name \(got 7\)/);
  rejects(answers.checkVolumeResponse, { epoch: 1, volume, changed: 'no' }, /changed is not true or false/);
  rejects(answers.checkPoolResponse, { epoch: 1, pool: { ...pool, pgs: pool.pgs.slice(1) } }, /^malformed pool answer: pool\.pgs does not list 4 PGs \(got "3 listed"\)$/);
  rejects(answers.checkPoolResponse, { epoch: 1, pool: { ...pool, failureDomain: 'planet' } }, /pool\.failureDomain is not one of zone, rack, host/);
  rejects(answers.checkPoolResponse, { epoch: 1, pool: { ...pool, replicas: 8 } }, /pool\.replicas is not an integer in 1\.\.7/);
  rejects(answers.checkPoolResponse, { epoch: 1, pool: { ...pool, pgs: [pool.pgs[0], { replicas: [1, 'x'], sinceEpoch: 1 }, ...pool.pgs.slice(2)] } }, /pool\.pgs\[1\]\.replicas\[1\] is not an integer/);
  rejects(answers.checkNodeStateResponse, { epoch: '12' }, /^malformed node state answer: epoch is not an integer/);
  rejects(answers.checkNodeChangeResponse, { epoch: 12, nodeId: 4 }, /^malformed node change answer: metaVoterRemoved is not true or false \(got absent\)$/);
  rejects(answers.checkNodeChangeResponse, { epoch: 12, nodeId: 0, metaVoterRemoved: false }, /nodeId is not an integer in 1\.\./);
  rejects(answers.checkGroupDigest, { groupId: 1, nodeId: 2, appliedIndex: 3 }, /^malformed digest answer: digest is no digest \(got absent\)$/);
  rejects(answers.checkGroupDigest, { groupId: 1, nodeId: 2, appliedIndex: 3, digest: 'v2:ab\ncd' }, /digest is no digest/);
  rejects(answers.checkGroupDigest, { groupId: 1, nodeId: 2, restoring: 'soon' }, /restoring is not true \(got "soon"\)/);
  rejects(answers.checkRebuildReplicaResponse, { groupId: 1, nodeId: 2, commitIndex: 5 }, /^malformed rebuild answer: leader is not an integer/);
});

test("an error answer's text is made printable and bounded; a leader hint that is no address, or a code of another form, is not taken", () => {
  const e = errorBodyFrom({ error: { code: 'NOT_LEADER', message: `ask \u001b]0;owned\u0007 elsewhere${'x'.repeat(3000)}`, leader: 'evil host:1' } });
  assert.ok(e !== undefined);
  assert.equal(e.leader, undefined);
  assert.ok(e.message.startsWith('ask  ]0;owned  elsewhere'), e.message);
  assert.equal([...e.message].length, 2000);
  for (const hint of ['10.0.0.2:10900', 'node-2.example:10900', '[fd00::2]:10900']) assert.equal(errorBodyFrom({ error: { code: 'NOT_LEADER', message: 'm', leader: hint } })?.leader, hint);
  for (const hint of ['10.0.0.2:0', '10.0.0.2:70000', ':10900', 'a/b:1', 7]) assert.equal(errorBodyFrom({ error: { code: 'NOT_LEADER', message: 'm', leader: hint } })?.leader, undefined, String(hint));
  assert.deepEqual(errorBodyFrom({ error: { code: 'NODE_HOLDS_REPLICAS', message: 'm', groups: [65536, 'x', -1, 1.5, 65537] } })?.groups, [65536, 65537]);
  assert.equal(errorBodyFrom({ error: { code: 'not\u001ba code', message: 'm' } }), undefined);
  assert.equal(errorBodyFrom({ error: { code: 'NOT_FOUND' } }), undefined);
  assert.equal(errorBodyFrom(null), undefined);
  assert.equal(errorBodyFrom({ error: null }), undefined);
});

test('each admin command fails clearly on a malformed answer, naming the endpoint, the node and the field', async (t) => {
  // Every answer has the right status but a shape of another build: `epoch` a string.
  const node = await httpNode(t, (_req, res) => answerJson(res, 200, { epoch: 'seven', volumes: 'none', volume: 1, pool: 1, nodeId: 'x' }));
  const commands: [string[], string, RegExp][] = [
    [['volume', 'list'], 'GET /v1/volumes', /malformed volume list: epoch is not an integer/],
    [['volume', 'create', 'v1', '--size', '1G'], 'POST /v1/volumes', /malformed volume answer: epoch is not an integer/],
    [['volume', 'resize', 'v1', '--size', '2G'], 'POST /v1/volumes/v1/resize', /malformed volume answer: epoch/],
    [['volume', 'delete', 'v1'], 'DELETE /v1/volumes/v1', /malformed volume answer: epoch/],
    [['pool', 'create', 'p1', '--replicas', '3', '--pgs', '8'], 'POST /v1/pools', /malformed pool answer: epoch/],
    [['pool', 'reset-pg', 'p1', '2', '--accept-data-loss'], 'POST /v1/pools/p1/pgs/2/reset', /malformed pool answer: epoch/],
    [['node-state', '4', 'out'], 'POST /v1/nodes/4/state', /malformed node state answer: epoch/],
    [['node', 'remove', '4'], 'DELETE /v1/nodes/4', /malformed node change answer: epoch/],
    [['node', 'replace', '4'], 'POST /v1/nodes/4/replace', /malformed node change answer: epoch/],
  ];
  for (const [args, endpoint, reason] of commands) {
    for (const json of [false, true]) {
      const r = await runCli([...args, '--server', node, ...(json ? ['--json'] : [])]);
      const what = `raftblock ${args.join(' ')}${json ? ' --json' : ''}`;
      assert.notEqual(r.code, 0, `${what} must fail`);
      assert.equal(r.stdout, '', `${what} prints no result`);
      assert.ok(r.stderr.includes(`${endpoint} on ${node}: `), `${what}: ${r.stderr}`);
      assert.match(r.stderr, reason, what);
      assert.match(r.stderr, /\[PROTOCOL_ERROR\]$/m, what);
      assert.doesNotMatch(r.stderr, /TypeError|at .*\.js:\d+/, `${what}: no stack trace`);
    }
  }
});

test('a well-formed answer is printed; an error answer is shown printable, and a bad leader hint is not followed', async (t) => {
  let asked = 0;
  const node = await httpNode(t, (req, res) => {
    asked++;
    if (req.url === '/v1/volumes') return answerJson(res, 200, { epoch: 9, volumes: [volume] });
    if (req.url === '/v1/volumes/v1') return answerJson(res, 503, { error: { code: 'NOT_LEADER', message: 'not the leader\u001b[31m, try\nthere', leader: 'no such host' } });
    answerJson(res, 404, { error: { code: 'NOT_FOUND', message: 'no route' } });
  });
  const list = await runCli(['volume', 'list', '--server', node]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^vol0 +1 +default +1 GiB +4 MiB$/m, list.stdout);

  asked = 0;
  const del = await runCli(['volume', 'delete', 'v1', '--server', node]);
  assert.notEqual(del.code, 0);
  assert.equal(del.stderr, 'raftblock: not the leader [31m, try there [NOT_LEADER]\n');
  // Not redirected to "no such host", and not repeated: NOT_LEADER is a refusal, not a lost answer.
  assert.equal(asked, 1);
});
