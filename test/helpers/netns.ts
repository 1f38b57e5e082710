/**
 * Network namespaces for partition tests, made and removed by the test itself.
 *
 * Layout: one "switch" namespace holding bridges, and one namespace per member, joined to the
 * switch by a veth pair (`eth0` in the member, `v<i>` in the switch). Members get 10.99.0.x/24
 * addresses — only inside these namespaces; the host's own network is never touched.
 * A partition moves the switch ends of the veths onto different bridges (members on the same
 * bridge see each other, members on different bridges do not); isolation sets a switch end
 * down; a cut between two members adds a blackhole route to the other in each of the two.
 * Processes run inside a member with `ip netns exec` (see spawnIn); clients that share a
 * member namespace with a node reach it on 127.0.0.1 whatever the partition.
 *
 * Cleanup: `close()` deletes every namespace (and with them the veths and bridges); the caller
 * kills its processes first. Namespaces left by a crashed run (their owner pid is gone) are
 * removed by the next `create`.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { TestContext } from 'node:test';
import { requireCapability, requireTools } from './tools.js';
import { pidAlive } from '../../src/common/ports.js';

const prefix = 'rbt';
export const memberSubnet = '10.99.0';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Removes namespaces that earlier test runs (now dead) left behind. */
export function removeStaleNamespaces(): void {
  const list = ip('netns', 'list');
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    const m = new RegExp(`^${prefix}(\\d+)-`).exec(name);
    if (m && !pidAlive(Number(m[1]))) {
      try {
        ip('netns', 'del', name);
      } catch {
        // Already gone.
      }
    }
  }
}

/** True when this process may create network namespaces (root with iproute2). */
/** Requires `ip` and the right to make network namespaces (root); see requireCapability. */
export function requireNetns(t: TestContext): boolean {
  return requireTools(t, 'ip') && requireCapability(t, canUseNetns(), 'network namespaces need root');
}

export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    ip('netns', 'list');
    return true;
  } catch {
    return false;
  }
}

export class NetnsNetwork {
  readonly size: number;
  readonly tag: string;
  private readonly switchNs: string;
  private bridges = 1;
  private closed = false;
  /** Blackhole routes added by `cut`, as [member whose namespace holds it, member it drops]. */
  private cuts: [number, number][] = [];

  private constructor(size: number, tag: string) {
    this.size = size;
    this.tag = tag;
    this.switchNs = `${tag}-sw`;
  }

  /**
   * Creates `size` member namespaces (indexes 1..size) on one bridge. Registers `close` with
   * t.after unless `register` is false (a caller that must kill processes first calls close).
   */
  static create(t: TestContext, size: number, register = true): NetnsNetwork {
    removeStaleNamespaces();
    const tag = `${prefix}${process.pid}-${Math.floor(Math.random() * 1e6).toString(36)}`;
    const net = new NetnsNetwork(size, tag);
    if (register) t.after(() => net.close());
    try {
      ip('netns', 'add', net.switchNs);
      ip('-n', net.switchNs, 'link', 'set', 'lo', 'up');
      ip('-n', net.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', net.switchNs, 'link', 'set', 'br0', 'up');
      for (let i = 1; i <= size; i++) {
        const ns = net.ns(i);
        ip('netns', 'add', ns);
        ip('-n', ns, 'link', 'set', 'lo', 'up');
        ip('-n', net.switchNs, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
        ip('-n', ns, 'addr', 'add', `${net.address(i)}/24`, 'dev', 'eth0');
        ip('-n', ns, 'link', 'set', 'eth0', 'up');
        ip('-n', net.switchNs, 'link', 'set', `v${i}`, 'master', 'br0');
        ip('-n', net.switchNs, 'link', 'set', `v${i}`, 'up');
      }
    } catch (err) {
      net.close();
      throw err;
    }
    return net;
  }

  /** Namespace name of member i (1-based). */
  ns(i: number): string {
    this.check(i);
    return `${this.tag}-${i}`;
  }

  /** IPv4 address of member i inside the namespaces. */
  address(i: number): string {
    this.check(i);
    return `${memberSubnet}.${10 + i}`;
  }

  /** Runs a command inside member i. */
  spawnIn(i: number, command: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.ns(i), command, ...args], opts);
  }

  /** Runs a command inside member i to completion; returns its stdout (throws on failure). */
  execIn(i: number, command: string, args: readonly string[], timeoutMs = 30_000): string {
    return execFileSync('ip', ['netns', 'exec', this.ns(i), command, ...args], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /**
   * Splits the members into groups that can talk only within themselves. Members not listed
   * are isolated from everyone. `partition([[1, 2], [3, 4, 5]])`.
   */
  partition(groups: readonly (readonly number[])[]): void {
    const listed = new Set<number>();
    for (const g of groups) for (const i of g) {
      if (listed.has(i)) throw new Error(`member ${i} in two groups`);
      listed.add(i);
    }
    while (this.bridges < groups.length) {
      const br = `br${this.bridges++}`;
      ip('-n', this.switchNs, 'link', 'add', br, 'type', 'bridge');
      ip('-n', this.switchNs, 'link', 'set', br, 'up');
    }
    groups.forEach((g, b) => {
      for (const i of g) {
        this.check(i);
        ip('-n', this.switchNs, 'link', 'set', `v${i}`, 'master', `br${b}`);
        ip('-n', this.switchNs, 'link', 'set', `v${i}`, 'up');
      }
    });
    for (let i = 1; i <= this.size; i++) if (!listed.has(i)) ip('-n', this.switchNs, 'link', 'set', `v${i}`, 'down');
  }

  /** Cuts member i off from every other member. */
  isolate(i: number): void {
    this.check(i);
    ip('-n', this.switchNs, 'link', 'set', `v${i}`, 'down');
  }

  /**
   * Cuts only the link between members i and j, both ways: each gets a blackhole route to the
   * other's address, so its packets to the other are dropped (a new connection fails at once,
   * an open one goes silent) while every other path, through the same bridge, stays up.
   * `heal` removes these routes.
   */
  cut(i: number, j: number): void {
    this.check(i);
    this.check(j);
    if (i === j) throw new Error(`cannot cut member ${i} from itself`);
    for (const [from, to] of [[i, j], [j, i]]) {
      if (this.cuts.some(([f, d]) => f === from && d === to)) continue;
      ip('-n', this.ns(from), 'route', 'add', 'blackhole', `${this.address(to)}/32`);
      this.cuts.push([from, to]);
    }
  }

  /** Everyone sees everyone again (links cut by `cut` too). */
  heal(): void {
    for (const [from, to] of this.cuts) ip('-n', this.ns(from), 'route', 'del', 'blackhole', `${this.address(to)}/32`);
    this.cuts = [];
    const all: number[] = [];
    for (let i = 1; i <= this.size; i++) all.push(i);
    this.partition([all]);
  }

  /** Deletes the namespaces (their veths and bridges go with them). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const names = [this.switchNs];
    for (let i = 1; i <= this.size; i++) names.push(`${this.tag}-${i}`);
    for (const name of names) {
      try {
        ip('netns', 'del', name);
      } catch {
        // Never created, or already gone.
      }
    }
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 1 || i > this.size) throw new Error(`no member ${i} in a network of ${this.size}`);
  }
}
