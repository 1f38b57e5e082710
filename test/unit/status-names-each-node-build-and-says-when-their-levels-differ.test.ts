/**
 * `raftblock status` names each reachable node's build (its version and the store command level
 * it applies) and says when the levels differ (a rolling upgrade under way, or a node left on an
 * earlier build), since commands above the lowest level wait until every replica applies them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { raftblockVersion } from '../../src/common/version.js';
import { mergeClusterStatus, type NodeStatus } from '../../src/cluster/admin-client.js';
import { describeMixedLevels, renderStatus } from '../../src/cli/commands/status.js';
import { zonedMap } from '../helpers/map.js';

test("the build's version is package.json's", () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(raftblockVersion, pkg.version);
});

const status = (nodeId: number, storeOpsLevel?: number): NodeStatus => ({ nodeId, epoch: 1, uptimeMs: 1, groups: [], ...(storeOpsLevel === undefined ? {} : { version: raftblockVersion, storeOpsLevel }) });

test('status names each build, and a line says when store command levels differ', () => {
  const map = zonedMap(4, 1);
  const mixed = mergeClusterStatus('x', map, new Map<number, NodeStatus | Error>([[1, status(1, 3)], [2, status(2, 1)], [3, status(3, 3)], [4, new Error('down')]]));
  assert.deepEqual(mixed.nodes.map((n) => n.storeOpsLevel), [3, 1, 3, undefined]);
  assert.equal(describeMixedLevels(mixed.nodes), 'builds differ: store command level 1 on node 2; level 3 on nodes 1, 3 (commands above the lowest level wait for an upgrade)');
  const out = renderStatus(mixed, { problemsOnly: true });
  assert.match(out, /^builds differ: store command level 1 on node 2; level 3 on nodes 1, 3 /m);
  assert.match(out, new RegExp(`^2 +in +yes +1 +${raftblockVersion.replaceAll('.', '\\.')} \\(level 1\\)`, 'm'), out);
  assert.match(out, /^4 +in +no \(down\) +- +- /m, out);

  // One level among the reachable (a node that does not say, or does not answer, is no evidence).
  const same = mergeClusterStatus('x', map, new Map<number, NodeStatus | Error>([[1, status(1, 3)], [2, status(2)], [3, status(3, 3)]]));
  assert.equal(describeMixedLevels(same.nodes), undefined);
  assert.doesNotMatch(renderStatus(same, { problemsOnly: true }), /builds differ/);
  assert.match(renderStatus(same, { problemsOnly: true }), /^2 +in +yes +1 +- /m, 'a node of a build that reports none');
});
