/**
 * A node restarting while its peers talk to it starts, and opens group 0 once. Its peers reach
 * it as soon as its peer port listens, before it has opened the groups it holds; a group-0
 * message then made it join group 0 as a newcomer while its own start opened the group from
 * its WAL, and the second opening failed the start (exit 2) on a loaded machine. Here the
 * restarted node holds its start for 300 ms with its peer port open (RAFTBLOCK_START_HOLD_MS,
 * as a slow disk or a busy core would), while a hand-made peer, under a member's identity,
 * sends group-0 messages every millisecond from before the node listens until it has started;
 * each of group 0's voters is restarted so in turn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HandPeer } from '../helpers/hand-peer.js';
import { logRecords, metaVoters, sleep, TestCluster, waitFor } from '../helpers/cluster.js';
import { metadataGroupId } from '../../src/cluster/map.js';

/** Sends a stale pre-vote for group 0 to `to`, as node `from`, every millisecond until stopped. */
function floodGroup0(cluster: TestCluster, to: number, from: number, clusterId: string, incarnation: string | undefined): { stop: () => Promise<number> } {
  let stopped = false;
  let sent = 0;
  const run = (async () => {
    while (!stopped) {
      let peer: HandPeer;
      try {
        peer = await HandPeer.open(cluster.node(to).addrs.peer, String(from), clusterId, incarnation, cluster.clusterKey);
      } catch {
        await sleep(2);
        continue;
      }
      while (!stopped && !peer.closed) {
        // Term 1 is behind every live term: the running group answers it with a refusal.
        peer.send({ epoch: 0, msgs: [{ g: metadataGroupId, m: { type: 'preVote', from, to, term: 1, index: 0, logTerm: 0, transfer: false } }] });
        sent++;
        await sleep(1);
      }
      peer.close();
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await run;
      return sent;
    },
  };
}

test('a node restarted under a flood of group-0 messages starts and opens group 0 once', { timeout: 180_000 }, async (t) => {
  const cluster = await TestCluster.start(t, { nodes: 3, pgCount: 2 });
  const map = await cluster.map();
  const clusterId = map.clusterId ?? '';
  assert.ok(clusterId, 'the map has no cluster id');
  const incarnation = (id: number): string | undefined => map.nodes.find((n) => n.id === id)?.incarnation;
  assert.deepEqual(metaVoters(await cluster.clusterStatus()), [1, 2, 3]);

  for (const target of [1, 2, 3]) {
    const from = target === 3 ? 1 : target + 1;
    await cluster.node(target).kill9();
    const flood = floodGroup0(cluster, target, from, clusterId, incarnation(from));
    await sleep(50);
    cluster.env.RAFTBLOCK_START_HOLD_MS = '300';
    let sent = 0;
    try {
      await cluster.node(target).start();
      // The messages keep coming while the restarted node settles into the group.
      await sleep(500);
    } finally {
      delete cluster.env.RAFTBLOCK_START_HOLD_MS;
      sent = await flood.stop();
      t.diagnostic(`node ${target}: ${sent} group-0 messages sent across its restart`);
    }
    assert.ok(sent > 0, 'the flood never reached the node');
    await waitFor(`group 0 whole again after node ${target}'s restart`, 30_000, async () => {
      const s = await cluster.clusterStatus();
      return metaVoters(s).length === 3 && s.groups.find((g) => g.groupId === metadataGroupId)?.health === 'ok' ? true : undefined;
    });
    assert.deepEqual(logRecords(cluster.node(target), 'could not start the metadata group'), [], `node ${target} failed to open group 0`);
  }
  // The map still changes: group 0 is whole on all three.
  await cluster.admin(2, 'createVolume', { name: 'after-the-restarts', sizeBytes: 1 << 20 });
});
