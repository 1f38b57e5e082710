/**
 * Replica placement: CRUSH-like straw2 over the fault-domain tree.
 *
 * The tree is root → zone → rack → host → node, built from node labels (`zone`, `rack`,
 * `host`). For each placement group the replicas are chosen in distinct domains of the pool's
 * failure-domain level, deterministically from (pg key, tree): no clock, no Math.random, only
 * integer hashing and Math.log (V8's fdlibm port, identical on every machine running the same
 * binary — and every node of a cluster runs the same binary, so every node computes the same
 * placement when it applies the same map command).
 *
 * straw2: every candidate draws `ln(u) / weight` with `u = (hash(x, item) + 1) / 2^32` in
 * (0, 1]; the largest draw wins. A candidate's draw depends only on its own key and weight, so
 * adding, removing or reweighting one node moves PGs only to or from that node.
 *
 * The replicas of a PG are the winners of the domains (at the pool's failure-domain level)
 * with the strongest draws: every node draws once, each domain keeps its best node, and the
 * `replicas` strongest domains win. This is straw2 with collisions resolved by excluding the
 * domains already chosen (rather than CRUSH's retry-with-r+1 descent from the root): a new
 * node changes a PG only where it wins a slot, and then exactly one member changes, so adding
 * or removing a node moves about its weight share of the replicas (≈1.0×, measured in
 * test/unit/placement-straw2.test.ts). A level-by-level descent with retries moved 2.6–3.4×
 * the ideal on a 200-node map, because PGs drawn into a heavier rack then re-spread over its
 * hosts, and retries cascade.
 */
import { RaftblockError } from '../common/errors.js';
import { assert } from '../common/assert.js';

export type NodeId = number;

/** The levels of the fault-domain tree, top to bottom. */
export const treeLevels = ['root', 'zone', 'rack', 'host', 'node'] as const;
export type TreeLevel = (typeof treeLevels)[number];

/** The levels a pool may ask its replicas to be distinct at. */
export const failureDomainLevels = ['zone', 'rack', 'host'] as const;
export type FailureDomain = (typeof failureDomainLevels)[number];

/** The pool cannot be placed: fewer usable failure domains than replicas. */
export class PlacementImpossible extends RaftblockError {
  readonly domainsAvailable: number;
  readonly replicas: number;
  constructor(message: string, domainsAvailable: number, replicas: number) {
    super('PLACEMENT_IMPOSSIBLE', message);
    this.domainsAvailable = domainsAvailable;
    this.replicas = replicas;
  }
}

/** What placement needs to know about a node. Nodes with weight 0 hold no replicas. */
export interface PlacementNode {
  readonly id: NodeId;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
}

// ---------------------------------------------------------------------------------------------
// Hashing: 32-bit murmur3 over 32-bit words. Fast, well mixed, no crypto.

const c1 = 0xcc9e2d51;
const c2 = 0x1b873593;
const hashSeed = 0x52424c4b; // fixed: placement must never change between runs

function mixWord(h: number, k: number): number {
  k = Math.imul(k, c1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, c2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3's finaliser: full avalanche of a 32-bit value. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of two 32-bit words (each taken modulo 2^32). */
export function hash2(a: number, b: number): number {
  let h = hashSeed;
  h = mixWord(h, a | 0);
  h = mixWord(h, b | 0);
  return fmix32(h ^ 8);
}

/** Hash of three 32-bit words (each taken modulo 2^32). */
export function hash3(a: number, b: number, c: number): number {
  let h = hashSeed;
  h = mixWord(h, a | 0);
  h = mixWord(h, b | 0);
  h = mixWord(h, c | 0);
  return fmix32(h ^ 12);
}

/** 32-bit hash of a string (its UTF-16 code units), for naming buckets. */
export function hashString(text: string): number {
  let h = hashSeed;
  for (let i = 0; i < text.length; i++) h = mixWord(h, text.charCodeAt(i));
  return fmix32(h ^ text.length);
}

/** The straw2 draw of one candidate: larger wins. `weight` must be > 0. */
export function straw2Draw(x: number, itemKey: number, weight: number): number {
  const u = (hash2(x, itemKey) + 1) / 4294967296; // (0, 1]
  return Math.log(u) / weight;
}

/** The placement input of one PG: a well-mixed key from (pool id, pg index). */
export function pgKey(poolId: number, pgIndex: number): number {
  return hash2(poolId, pgIndex);
}

// ---------------------------------------------------------------------------------------------
// The fault-domain tree.

const levelIndex: Record<TreeLevel, number> = { root: 0, zone: 1, rack: 2, host: 3, node: 4 };

/** The domain names a node sits in, from its labels. A node without `host` is its own host. */
export function nodeDomains(node: PlacementNode): { zone: string; rack: string; host: string } {
  return {
    zone: node.labels.zone ?? 'default',
    rack: node.labels.rack ?? 'default',
    host: node.labels.host ?? `node-${node.id}`,
  };
}

/**
 * The fault-domain tree of a set of nodes, ready to place PGs. Build once per map change and
 * place every PG of every pool with it. Reuses its scratch arrays: not reentrant.
 */
export class PlacementTree {
  /** Leaves (nodes of positive weight), sorted by id: index i is the i-th candidate. */
  private readonly ids: Int32Array;
  private readonly keys: Uint32Array;
  private readonly weights: Float64Array;
  /** domainOf[fd][i]: the index of leaf i's domain at level fd (1 zone, 2 rack, 3 host). */
  private readonly domainOf: Int32Array[];
  private readonly domainNames: string[][];
  private readonly domainWeights: Float64Array[];
  readonly totalWeight: number;
  // Scratch, sized for the widest level.
  private readonly bestDraw: Float64Array;
  private readonly bestLeaf: Int32Array;
  private readonly taken: Uint8Array;

  private constructor(nodes: PlacementNode[]) {
    const n = nodes.length;
    this.ids = new Int32Array(n);
    this.keys = new Uint32Array(n);
    this.weights = new Float64Array(n);
    this.domainOf = [new Int32Array(0), new Int32Array(n), new Int32Array(n), new Int32Array(n)];
    this.domainNames = [[''], [], [], []];
    this.domainWeights = [new Float64Array([0]), new Float64Array(0), new Float64Array(0), new Float64Array(0)];
    const indexes = [new Map<string, number>(), new Map<string, number>(), new Map<string, number>(), new Map<string, number>()];
    const weightsByLevel: number[][] = [[], [], [], []];
    let total = 0;
    for (let i = 0; i < n; i++) {
      const node = nodes[i];
      this.ids[i] = node.id;
      this.keys[i] = hashString(`node=${node.id}`);
      this.weights[i] = node.weight;
      total += node.weight;
      const d = nodeDomains(node);
      // A domain is named by its whole path: rack "r1" in zone "a" differs from "r1" in "b".
      const paths = ['', `zone=${d.zone}`, `zone=${d.zone}/rack=${d.rack}`, `zone=${d.zone}/rack=${d.rack}/host=${d.host}`];
      for (let level = 1; level <= 3; level++) {
        let idx = indexes[level].get(paths[level]);
        if (idx === undefined) {
          idx = this.domainNames[level].length;
          indexes[level].set(paths[level], idx);
          this.domainNames[level].push(paths[level]);
          weightsByLevel[level].push(0);
        }
        weightsByLevel[level][idx] += node.weight;
        this.domainOf[level][i] = idx;
      }
    }
    for (let level = 1; level <= 3; level++) this.domainWeights[level] = Float64Array.from(weightsByLevel[level]);
    this.totalWeight = total;
    const widest = Math.max(1, this.domainNames[3].length, this.domainNames[2].length, this.domainNames[1].length);
    this.bestDraw = new Float64Array(widest);
    this.bestLeaf = new Int32Array(widest);
    this.taken = new Uint8Array(widest);
  }

  static build(nodes: readonly PlacementNode[]): PlacementTree {
    const seen = new Set<NodeId>();
    for (const node of nodes) {
      assert(Number.isSafeInteger(node.id) && node.id > 0 && node.id <= 0x7fffffff, `node id must be a positive 31-bit integer, got ${node.id}`);
      assert(!seen.has(node.id), `node ${node.id} listed twice`);
      seen.add(node.id);
      assert(Number.isFinite(node.weight) && node.weight >= 0, `node ${node.id}: weight must be finite and >= 0`);
    }
    // Sorted so that every tie-break is independent of input order; weight 0 holds nothing.
    const usable = nodes.filter((n) => n.weight > 0).sort((a, b) => a.id - b.id);
    return new PlacementTree(usable);
  }

  /** How many distinct domains of `level` hold at least one node of positive weight. */
  domainCount(level: FailureDomain): number {
    return this.domainNames[levelIndex[level]].length;
  }

  /** The domains of `level` (full paths such as "zone=a/rack=r1") with their weights. */
  domains(level: FailureDomain): { name: string; weight: number }[] {
    const l = levelIndex[level];
    return this.domainNames[l].map((name, i) => ({ name, weight: this.domainWeights[l][i] }));
  }

  /**
   * Chooses `replicas` nodes for the PG with key `x` (see pgKey), each in a distinct domain
   * of `failureDomain`, strongest draw first (the first is the preferred leader). Throws
   * PlacementImpossible when there are fewer domains than replicas.
   */
  place(x: number, replicas: number, failureDomain: FailureDomain): NodeId[] {
    assert(Number.isSafeInteger(replicas) && replicas >= 1, `replicas must be a positive integer, got ${replicas}`);
    const fd = levelIndex[failureDomain];
    assert(fd >= 1 && fd <= 3, `bad failure domain ${failureDomain}`);
    const domainCount = this.domainNames[fd].length;
    if (domainCount < replicas) {
      throw new PlacementImpossible(
        `cannot place ${replicas} replicas in distinct ${failureDomain}s: only ${domainCount} ${failureDomain}(s) with weight`,
        domainCount,
        replicas,
      );
    }
    const { bestDraw, bestLeaf, taken } = this;
    bestDraw.fill(-Infinity, 0, domainCount);
    taken.fill(0, 0, domainCount);
    const domainOf = this.domainOf[fd];
    // One straw2 draw per node; each domain keeps its winner. A domain's winning draw is
    // distributed as a straw2 draw with the domain's total weight (exponential race), so
    // domains are chosen in proportion to their weight and nodes within them likewise.
    for (let i = 0; i < this.ids.length; i++) {
      const draw = straw2Draw(x, this.keys[i], this.weights[i]);
      const d = domainOf[i];
      if (draw > bestDraw[d]) {
        bestDraw[d] = draw;
        bestLeaf[d] = i;
      }
    }
    const out: NodeId[] = [];
    for (let rep = 0; rep < replicas; rep++) {
      let best = -1;
      for (let d = 0; d < domainCount; d++) {
        if (taken[d] === 0 && (best < 0 || bestDraw[d] > bestDraw[best])) best = d;
      }
      assert(best >= 0, 'no free domain left');
      taken[best] = 1;
      out.push(this.ids[bestLeaf[best]]);
    }
    return out;
  }
}

/**
 * Places every PG of a pool: element i is the replica list of PG i. Throws PlacementImpossible
 * (before doing any work) when the pool cannot be placed.
 */
export function placePool(
  tree: PlacementTree,
  poolId: number,
  pgCount: number,
  replicas: number,
  failureDomain: FailureDomain,
): NodeId[][] {
  assert(Number.isSafeInteger(pgCount) && pgCount >= 1, `pgCount must be a positive integer, got ${pgCount}`);
  const out: NodeId[][] = new Array(pgCount);
  for (let pg = 0; pg < pgCount; pg++) out[pg] = tree.place(pgKey(poolId, pg), replicas, failureDomain);
  return out;
}
