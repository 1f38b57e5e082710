import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  PlacementImpossible,
  PlacementTree,
  failureDomainLevels,
  hash2,
  hash3,
  nodeDomains,
  placePool,
  type FailureDomain,
  type NodeId,
  type PlacementNode,
} from '../../src/cluster/placement.js';
import { RaftblockError } from '../../src/common/errors.js';

/** A datacenter: zones of racks of hosts of nodes; every third node has weight 2. */
function datacenter(nodeCount: number, nodesPerHost = 2, hostsPerRack = 4, racksPerZone = 5): PlacementNode[] {
  const nodes: PlacementNode[] = [];
  for (let id = 1; id <= nodeCount; id++) {
    const host = Math.floor((id - 1) / nodesPerHost);
    const rack = Math.floor(host / hostsPerRack);
    const zone = Math.floor(rack / racksPerZone);
    nodes.push({ id, labels: { zone: `z${zone}`, rack: `r${rack}`, host: `h${host}` }, weight: id % 3 === 0 ? 2 : 1 });
  }
  return nodes;
}

function domainOf(node: PlacementNode, level: FailureDomain): string {
  const d = nodeDomains(node);
  if (level === 'zone') return d.zone;
  if (level === 'rack') return `${d.zone}/${d.rack}`;
  return `${d.zone}/${d.rack}/${d.host}`;
}

/** Replicas that are in `after` but not in `before`, summed over PGs. */
function movedReplicas(before: NodeId[][], after: NodeId[][]): number {
  let moved = 0;
  for (let pg = 0; pg < before.length; pg++) for (const n of after[pg]) if (!before[pg].includes(n)) moved++;
  return moved;
}

test('the hash is pinned: placement never changes between runs or releases', () => {
  // Changing these values would move every PG of every existing cluster.
  assert.equal(hash2(1, 2), hash2(1, 2));
  assert.notEqual(hash2(1, 2), hash2(2, 1));
  const pinned = [hash2(0, 0), hash2(1, 2), hash3(1, 2, 3), hash3(0xffffffff, 7, 0)];
  assert.deepEqual(pinned, PINNED_HASHES);
  const tree = PlacementTree.build(datacenter(24));
  assert.deepEqual(placePool(tree, 1, 4, 3, 'rack'), PINNED_PLACEMENT);
});

test('replicas of every PG sit on distinct nodes in distinct failure domains (property)', () => {
  const nodeArb = fc.record({
    zone: fc.integer({ min: 0, max: 3 }),
    rack: fc.integer({ min: 0, max: 3 }),
    host: fc.integer({ min: 0, max: 5 }),
    weight: fc.oneof(fc.constant(0), fc.double({ min: 0.1, max: 8, noNaN: true })),
  });
  fc.assert(
    fc.property(
      fc.array(nodeArb, { minLength: 1, maxLength: 60 }),
      fc.constantFrom<FailureDomain>(...failureDomainLevels),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 1000 }),
      (specs, level, replicas, poolId) => {
        const nodes: PlacementNode[] = specs.map((s, i) => ({
          id: i + 1,
          labels: { zone: `z${s.zone}`, rack: `r${s.rack}`, host: `h${s.host}` },
          weight: s.weight,
        }));
        const byId = new Map(nodes.map((n) => [n.id, n]));
        const tree = PlacementTree.build(nodes);
        const domains = new Set(nodes.filter((n) => n.weight > 0).map((n) => domainOf(n, level)));
        assert.equal(tree.domainCount(level), domains.size);
        if (domains.size < replicas) {
          assert.throws(() => placePool(tree, poolId, 8, replicas, level), PlacementImpossible);
          return;
        }
        const placement = placePool(tree, poolId, 32, replicas, level);
        // Input order does not matter.
        const reversed = PlacementTree.build([...nodes].reverse());
        assert.deepEqual(placePool(reversed, poolId, 32, replicas, level), placement);
        for (const pg of placement) {
          assert.equal(pg.length, replicas);
          const seen = new Set(pg.map((id) => domainOf(byId.get(id)!, level)));
          assert.equal(seen.size, replicas, `replicas ${pg} share a ${level}`);
          for (const id of pg) assert.ok(byId.get(id)!.weight > 0, 'a weight-0 node got a replica');
        }
      },
    ),
    { numRuns: 300, seed: 20261125 },
  );
});

test('PG counts follow node weights on a 200-node map', () => {
  const nodes = datacenter(200);
  const pgCount = 16384;
  const replicas = 3;
  const tree = PlacementTree.build(nodes);
  const totalWeight = nodes.reduce((s, n) => s + n.weight, 0);
  for (const level of failureDomainLevels) {
    const counts = new Map<NodeId, number>();
    for (const pg of placePool(tree, 7, pgCount, replicas, level)) for (const id of pg) counts.set(id, (counts.get(id) ?? 0) + 1);
    let worst = 0;
    const perWeightUnit: Record<number, number[]> = { 1: [], 2: [] };
    for (const n of nodes) {
      const expected = (pgCount * replicas * n.weight) / totalWeight;
      const got = counts.get(n.id) ?? 0;
      worst = Math.max(worst, Math.abs(got - expected) / expected);
      perWeightUnit[n.weight].push(got / n.weight);
    }
    // ~180 replicas a weight unit: 3.5 standard deviations is ~26%.
    assert.ok(worst < 0.3, `${level}: a node deviates ${(worst * 100).toFixed(1)}% from its weight share`);
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const ratio = mean(perWeightUnit[2]) / mean(perWeightUnit[1]);
    assert.ok(Math.abs(ratio - 1) < 0.06, `${level}: weight-2 nodes hold ${ratio.toFixed(3)}× per weight unit`);
  }
});

test('adding or removing a node moves about its share of the replicas, and only to or from it', () => {
  const nodes = datacenter(300);
  const pgCount = 8192;
  const replicas = 3;
  const totalWeight = nodes.reduce((s, n) => s + n.weight, 0);
  const before = PlacementTree.build(nodes);
  const cases: { what: string; nodes: PlacementNode[]; node: PlacementNode; added: boolean }[] = [];
  const newcomerInRack: PlacementNode = { id: 1001, labels: { zone: 'z1', rack: 'r7', host: 'h-new' }, weight: 2 };
  const newcomerInHost: PlacementNode = { id: 1002, labels: { zone: 'z0', rack: 'r2', host: 'h9' }, weight: 1 };
  cases.push({ what: 'add a host to a rack', nodes: [...nodes, newcomerInRack], node: newcomerInRack, added: true });
  cases.push({ what: 'add a node to a host', nodes: [...nodes, newcomerInHost], node: newcomerInHost, added: true });
  const leaving = nodes[41];
  cases.push({ what: 'remove a node', nodes: nodes.filter((n) => n.id !== leaving.id), node: leaving, added: false });
  for (const level of failureDomainLevels) {
    const old = placePool(before, 3, pgCount, replicas, level);
    for (const c of cases) {
      const now = placePool(PlacementTree.build(c.nodes), 3, pgCount, replicas, level);
      const moved = movedReplicas(old, now);
      const weightAfter = totalWeight + (c.added ? c.node.weight : -c.node.weight);
      const ideal = (pgCount * replicas * c.node.weight) / (c.added ? weightAfter : totalWeight);
      assert.ok(moved <= 1.5 * ideal, `${level}, ${c.what}: moved ${moved} replicas, ideal ${ideal.toFixed(0)}`);
      assert.ok(moved >= 0.5 * ideal, `${level}, ${c.what}: moved only ${moved} replicas, ideal ${ideal.toFixed(0)}`);
      for (let pg = 0; pg < pgCount; pg++) {
        const gained = now[pg].filter((n) => !old[pg].includes(n));
        if (gained.length === 0) continue;
        // Every changed PG changed exactly one member, and that change involves the node.
        assert.equal(gained.length, 1, `${level}, ${c.what}: pg ${pg} changed ${gained.length} members`);
        if (c.added) assert.deepEqual(gained, [c.node.id]);
        else assert.ok(old[pg].includes(c.node.id), `${level}, ${c.what}: pg ${pg} moved without holding the node`);
      }
    }
  }
});

test('a pool with fewer failure domains than replicas is refused with a typed error', () => {
  const nodes: PlacementNode[] = [
    { id: 1, labels: { zone: 'a', host: 'h1' }, weight: 1 },
    { id: 2, labels: { zone: 'a', host: 'h2' }, weight: 1 },
    { id: 3, labels: { zone: 'b', host: 'h3' }, weight: 1 },
    { id: 4, labels: { zone: 'c', host: 'h4' }, weight: 0 },
  ];
  const tree = PlacementTree.build(nodes);
  assert.equal(tree.domainCount('zone'), 2);
  assert.equal(tree.domainCount('host'), 3);
  assert.throws(
    () => placePool(tree, 1, 16, 3, 'zone'),
    (e: unknown) => e instanceof PlacementImpossible && (e as RaftblockError).code === 'PLACEMENT_IMPOSSIBLE' && e.domainsAvailable === 2,
  );
  for (const pg of placePool(tree, 1, 16, 3, 'host')) assert.deepEqual([...pg].sort(), [1, 2, 3]);
  assert.throws(() => placePool(PlacementTree.build([]), 1, 1, 1, 'host'), PlacementImpossible);
});

test('nodes without labels are each their own host in one default zone and rack', () => {
  const nodes: PlacementNode[] = [1, 2, 3, 4].map((id) => ({ id, labels: {}, weight: 1 }));
  const tree = PlacementTree.build(nodes);
  assert.equal(tree.domainCount('zone'), 1);
  assert.equal(tree.domainCount('rack'), 1);
  assert.equal(tree.domainCount('host'), 4);
  assert.throws(() => placePool(tree, 1, 4, 2, 'rack'), PlacementImpossible);
});

const PINNED_HASHES: number[] = [4107161771, 3761732104, 1172654146, 417400634];
const PINNED_PLACEMENT: NodeId[][] = [
  [9, 24, 8],
  [11, 24, 6],
  [15, 22, 7],
  [17, 8, 15],
];
