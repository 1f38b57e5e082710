/**
 * Down-out tells a cut link from a lost node (4 nodes, each in its own network namespace,
 * `--down-out-interval 3`). With only the link between group 0's leader and another node V
 * cut, V stays unreachable from the leader well past the interval, but the other nodes still
 * reach it: the leader asks them before marking it out, leaves V `in` (a warning says the
 * others reach it) and never marks it out. With V isolated from everyone, the leader marks it
 * out on its own (autoOut) and its PGs are placed and rebuilt on the three nodes left; healed,
 * V answers again, is marked in, PGs move back onto it, and every replica of every PG holds
 * the same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, describePlacement, describeUnhealthy, logRecords, pgsPlacedOn, sleep, waitFor } from '../helpers/cluster.js';
import { requireNetns } from '../helpers/netns.js';
import type { ClusterStatus } from '../../src/cluster/admin-client.js';
import type { ClusterMap } from '../../src/cluster/map.js';

const MiB = 1024 * 1024;
const pgCount = 8;
const holdMsg = 'node unreachable past the down-out interval, left in';
/** Part A lasts at least this long: the 3 s interval, a probe timeout, and a margin. */
const cutHoldsMs = 10_000;
/** Part A fails if no leader has logged the hold by then. */
const cutHoldDeadlineMs = 25_000;

test('down-out leaves in a node only the leader cannot reach, and marks out (then in again) a node nobody reaches', { timeout: 180_000 }, async (t) => {
  if (!requireNetns(t)) return;
  const started = Date.now();
  const phase = (what: string): void => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  const cluster = await TestCluster.start(t, {
    nodes: 4,
    netns: true,
    pgCount,
    volumes: [{ name: 'vol0', sizeBytes: 32 * MiB, extentBytes: MiB }],
    nodeFlags: ['--down-out-interval', '3'],
  });
  const net = cluster.net!;
  const ids = cluster.nodes.map((n) => n.id);
  const mapFrom = (id: number): Promise<ClusterMap> => cluster.admin<ClusterMap>(id, 'map');
  const metaLeader = (s: ClusterStatus): number => s.groups.find((g) => g.groupId === 0)?.leader ?? 0;

  const s0 = await cluster.waitLeaders(60_000);
  const leader = metaLeader(s0);
  assert.ok(leader !== 0, `no leader of group 0: ${describeUnhealthy(s0)}`);
  const before = await mapFrom(leader);
  // V: a node other than the leader, the one holding the most PG replicas (highest id on ties).
  const victim = ids.filter((id) => id !== leader).sort((a, b) => pgsPlacedOn(before, b) - pgsPlacedOn(before, a) || b - a)[0];
  assert.ok(pgsPlacedOn(before, victim) > 0, `node ${victim} holds no PG: ${describePlacement(before)}`);
  // Asked for the map and the status: a node that keeps every link in both parts.
  const observer = ids.find((id) => id !== leader && id !== victim)!;
  const others = ids.filter((id) => id !== victim);
  phase(`group 0 led by node ${leader}; victim node ${victim} (holds ${pgsPlacedOn(before, victim)} PGs); observer node ${observer}`);

  // --- Part A: only the link between the leader and V is cut.
  net.cut(leader, victim);
  const cutAt = Date.now();
  const cutIso = new Date(cutAt).toISOString();
  phase(`cut the link between nodes ${leader} and ${victim}`);
  const leadersSeen = new Set<number>([leader]);
  let lastMap: ClusterMap | undefined;
  let lastStatus: ClusterStatus | undefined;
  /** Hold records since the cut, logged by one end of the cut about the other. */
  const holdsAcrossCut = (): string[] =>
    [leader, victim].flatMap((by) =>
      logRecords(cluster.node(by), holdMsg)
        .filter((r) => typeof r.ts === 'string' && r.ts >= cutIso && r.nodeId === (by === leader ? victim : leader))
        .map((r) => `node ${by} about node ${String(r.nodeId)}: ${String(r.reason)}`),
    );
  let found: string[] = [];
  for (;;) {
    const elapsed = Date.now() - cutAt;
    try {
      lastMap = await mapFrom(observer);
      lastStatus = await cluster.clusterStatus(observer);
      const l = metaLeader(lastStatus);
      if (l !== 0) leadersSeen.add(l);
    } catch (err) {
      t.diagnostic(`part A: reading from node ${observer} failed (${(err as Error).message}); polling on`);
    }
    // Never out while cut from the leader only: neither V nor the leader (the cut is symmetric,
    // and group 0's leadership may move to V).
    if (lastMap) for (const id of [victim, leader]) {
      const n = lastMap.nodes.find((x) => x.id === id);
      assert.ok(
        n !== undefined && n.state === 'in' && n.autoOut === undefined,
        `node ${id} was marked ${n?.state}${n?.autoOut ? ' (auto)' : ''} ${elapsed} ms into the cut between nodes ${leader} and ${victim} only ` +
          `(group 0 leaders seen: ${[...leadersSeen].join(', ')})\n${describePlacement(lastMap)}\nhold records: ${holdsAcrossCut().join(' | ') || 'none'}\n` +
          `${lastStatus ? describeUnhealthy(lastStatus) : ''}\n${cluster.logs(8)}`,
      );
    }
    found = holdsAcrossCut();
    if (elapsed >= cutHoldsMs && found.length > 0) break;
    if (elapsed >= cutHoldDeadlineMs) break;
    await sleep(500);
  }
  const cutForMs = Date.now() - cutAt;
  assert.ok(lastMap !== undefined, `node ${observer} never answered for the map during the cut\n${cluster.logs(8)}`);
  const leaderMoved = [...leadersSeen].some((l) => l !== leader && l !== victim);
  if (found.length === 0) {
    // No hold logged: only acceptable if group 0 moved to a node that reaches both ends.
    assert.ok(
      leaderMoved,
      `no '${holdMsg}' record from node ${leader} or ${victim} about the other ${cutForMs} ms into the cut, group 0 led by ${[...leadersSeen].join(', ')}\n` +
        `${describePlacement(lastMap)}\n${lastStatus ? describeUnhealthy(lastStatus) : ''}\n${cluster.logs(8)}`,
    );
    t.diagnostic(`part A: group 0 moved to a node reaching both ends (${[...leadersSeen].join(', ')}), no hold needed`);
  } else {
    for (const f of found) assert.match(f, /reach it/, `hold record without 'reach it': ${f}`);
    if (leadersSeen.size === 1) {
      assert.ok(found.some((f) => f.startsWith(`node ${leader} about node ${victim}:`)), `group 0 stayed on node ${leader}, yet the holds are: ${found.join(' | ')}`);
    }
  }
  phase(`part A: ${victim} stayed in for ${cutForMs} ms of the cut; group 0 leaders seen ${[...leadersSeen].join(', ')}; holds: ${found.join(' | ') || 'none'}`);
  net.heal();
  // Everything reaches everything again before part B: the leader's clock for V starts over
  // only once V answers it, and part B should time V's absence from the isolation on.
  let healedStatus: ClusterStatus | undefined;
  await waitFor('every node reachable and every group ok after healing the cut', 60_000, async () => {
    const s = (healedStatus = await cluster.clusterStatus(leader));
    return s.nodes.every((n) => n.reachable) && s.summary.ok === s.summary.groups ? true : undefined;
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${healedStatus ? describeUnhealthy(healedStatus) : ''}\n${cluster.logs(8)}`);
  });
  await sleep(2_000);
  phase('healed the cut, every group ok');

  /** The map from `via` once `mapReady` holds and every PG is settled (see waitPlacementSettled). */
  const settled = async (what: string, via: number, ask: number[], mapReady: (map: ClusterMap) => string | undefined): Promise<ClusterMap> =>
    (await cluster.waitPlacementSettled(what, { via, ask, mapReady })).map;

  // --- Part B: V isolated from everyone.
  net.isolate(victim);
  const isolatedAt = Date.now();
  phase(`isolated node ${victim}`);
  const outMap = await settled(`node ${victim} marked out (autoOut) and its PGs settled on nodes ${others.join(', ')}`, observer, others, (map) => {
    const n = map.nodes.find((x) => x.id === victim);
    if (n?.state !== 'out' || n.autoOut !== true) return `node ${victim} is ${n?.state}${n?.autoOut ? ' (auto)' : ''}`;
    const still = pgsPlacedOn(map, victim);
    return still > 0 ? `${still} PGs still placed on node ${victim}` : undefined;
  });
  const outAfterMs = Date.now() - isolatedAt;
  assert.equal(pgsPlacedOn(outMap, victim), 0);
  phase(`node ${victim} out, its PGs on nodes ${others.join(', ')} (${outAfterMs} ms after isolation)`);

  net.heal();
  const healedAt = Date.now();
  phase('healed');
  const inMap = await settled(`node ${victim} marked in again and holding PGs, every PG settled on all four nodes`, observer, ids, (map) => {
    const n = map.nodes.find((x) => x.id === victim);
    if (n?.state !== 'in' || n.autoOut !== undefined) return `node ${victim} is ${n?.state}${n?.autoOut ? ' (auto)' : ''}`;
    return pgsPlacedOn(map, victim) > 0 ? undefined : `no PG placed on node ${victim}`;
  });
  const inAfterMs = Date.now() - healedAt;
  phase(`node ${victim} in again, holding ${pgsPlacedOn(inMap, victim)} PGs (${inAfterMs} ms after heal)`);

  assert.equal(await cluster.waitReplicasIdentical(60_000), pgCount);
  phase('replicas identical');

  const warnings = cluster.nodes.flatMap((n) =>
    [...logRecords(n, holdMsg), ...logRecords(n, 'down-out round failed; the next round tries again')].map(
      (r) => `node ${n.id}: ${String(r.msg)} ${JSON.stringify({ ...r, msg: undefined, ts: undefined, level: undefined, component: undefined })}`,
    ),
  );
  for (const w of warnings) t.diagnostic(`down-out warning: ${w}`);
  t.diagnostic(`node ${victim}: left in through ${cutForMs} ms of a cut from node ${leader}, out ${outAfterMs} ms after isolation, in and settled ${inAfterMs} ms after heal; ${Date.now() - started} ms in all`);
});
