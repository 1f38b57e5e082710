import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MultiRaftHost } from '../../src/cluster/host.js';
import { Transport } from '../../src/cluster/transport.js';
import { Wal } from '../../src/wal/index.js';
import { FsBlockIo } from '../../src/io/fs.js';
import { cpSync } from 'node:fs';
import { tempDir } from '../helpers/tools.js';
import { Registry } from 'prom-client';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetaStore, openMetaGroup } from '../../src/cluster/meta-store.js';
import { encodeCommand, encodeMap, type ClusterMap } from '../../src/cluster/map.js';
import { addNodeCommand } from '../helpers/map.js';
import { Register } from '../helpers/register-machine.js';
import { SnapshotSourceChanged, TimedOut, Unavailable } from '../../src/common/errors.js';
import { until } from '../helpers/until.js';

/** A WAL stand-in with the same contract, in memory (the real one is tested on its own). */
class MemWal {
  private readonly groups = new Map<number, { entries: { index: number; term: number; type: number; data: Uint8Array }[]; hs: { term: number; vote: number; commit: number }; first: number }>();
  recovery = { cut: null, corruption: null, needsRepair: [] };
  batches = 0;
  /** What the host's WAL counters read (WalStats): batches as counted here. */
  get stats() {
    return { batchesWritten: this.batches, recordsWritten: 2 * this.batches, bytesWritten: 4096 * this.batches, segmentsCreated: 1, segmentsRecycled: 0, segmentsRemoved: 3 };
  }
  private pending: Promise<void> | undefined;
  private g(id: number) {
    let g = this.groups.get(id);
    if (!g) this.groups.set(id, (g = { entries: [], hs: { term: 0, vote: 0, commit: 0 }, first: 1 }));
    return g;
  }
  private batch(): Promise<void> {
    if (!this.pending) {
      this.pending = new Promise((r) => setTimeout(r, 1)).then(() => {
        this.pending = undefined;
        this.batches++;
      });
    }
    return this.pending;
  }
  append(id: number, entries: { index: number; term: number; type: number; data: Uint8Array }[]): Promise<void> {
    const g = this.g(id);
    for (const e of entries) {
      g.entries = g.entries.filter((x) => x.index < e.index);
      g.entries.push(e);
    }
    return this.batch();
  }
  saveHardState(id: number, hs: { term: number; vote: number; commit: number }): Promise<void> {
    this.g(id).hs = { ...hs };
    return this.batch();
  }
  checkpoint(id: number, index: number): Promise<void> {
    const g = this.g(id);
    g.entries = g.entries.filter((e) => e.index > index);
    g.first = Math.max(g.first, index + 1);
    return this.batch();
  }
  installSnapshot(id: number, meta: { index: number }): Promise<void> {
    const g = this.g(id);
    g.entries = g.entries.filter((e) => e.index > meta.index);
    g.first = meta.index + 1;
    return this.batch();
  }
  groupIds(): number[] {
    return [...this.groups.keys()];
  }
  hardState(id: number) {
    return this.g(id).hs;
  }
  firstIndex(id: number): number {
    return this.g(id).first;
  }
  lastIndex(id: number): number {
    const g = this.g(id);
    return g.entries.length ? g.entries[g.entries.length - 1].index : g.first - 1;
  }
  async entries(id: number, lo: number, hi: number) {
    return this.g(id).entries.filter((e) => e.index >= lo && e.index < hi);
  }
  needsRepair(): boolean {
    return false;
  }
}

/** A started loopback transport of node `id` that hands Raft messages to the host `host()` returns. */
async function loopbackTransport(id: number, host: () => MultiRaftHost): Promise<Transport> {
  const tr = new Transport({
    nodeId: String(id),
    listen: { host: '127.0.0.1', port: 0 },
    epoch: () => 1,
    handlers: { onMessages: (from, _e, msgs) => host().receive(Number(from), msgs), onRequest: async () => undefined },
  });
  await tr.start();
  return tr;
}

/** Hosts on real loopback transports that know each other's addresses (no groups yet). */
async function connectHosts<W extends MemWal>(ids: number[], makeWal: (id: number) => W, opts: { tickMs: number; registries?: Registry[] }) {
  const hosts: MultiRaftHost[] = [];
  const wals: W[] = [];
  const transports: Transport[] = [];
  for (const [i, id] of ids.entries()) {
    let host!: MultiRaftHost;
    const tr = await loopbackTransport(id, () => host);
    transports.push(tr);
    const wal = makeWal(id);
    wals.push(wal);
    host = new MultiRaftHost({ nodeId: id, wal: wal as unknown as Wal, transport: tr, tickMs: opts.tickMs, fetchSnapshot: async () => new Uint8Array(0), registry: opts.registries?.[i] });
    hosts.push(host);
  }
  for (const tr of transports) for (const [i, other] of transports.entries()) tr.setPeerAddress(String(ids[i]), other.address);
  return { hosts, wals, transports };
}

test('three hosts elect a leader per group, replicate proposals, and share one WAL batch per round', async (t) => {
  const ids = [1, 2, 3];
  const sms = new Map<string, Register>();
  const registries = ids.map(() => new Registry());
  const { hosts, wals, transports } = await connectHosts(ids, () => new MemWal(), { tickMs: 50, registries });
  const groups = [11, 12, 13, 14];
  for (const [i, h] of hosts.entries()) {
    for (const g of groups) {
      const sm = new Register();
      sms.set(`${ids[i]}/${g}`, sm);
      await h.addGroup(g, ids, sm, { campaign: ids[i] === 1 + (g % 3) });
    }
    h.start();
  }
  t.after(async () => {
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  const leaderOf = (g: number): number => {
    for (const [i, h] of hosts.entries()) if (h.groups.get(g)?.isLeader) return i;
    return -1;
  };
  await until(() => groups.every((g) => leaderOf(g) >= 0));
  const writes = [];
  for (const g of groups) {
    const h = hosts[leaderOf(g)];
    for (let k = 0; k < 20; k++) writes.push(h.propose(g, Buffer.from(`g${g}-v${k}`)));
  }
  const batchesBefore = wals.map((w) => w.batches);
  await Promise.all(writes);
  // 80 proposals over 4 groups, issued in one turn: group commit needs far fewer WAL batches.
  for (const [i, w] of wals.entries()) assert.ok(w.batches - batchesBefore[i] < 40, `node ${ids[i]} used ${w.batches - batchesBefore[i]} WAL batches`);
  await until(() => groups.every((g) => ids.every((id) => sms.get(`${id}/${g}`)!.values.length === 20)));
  for (const g of groups) {
    const want = Array.from({ length: 20 }, (_, k) => `g${g}-v${k}`);
    for (const id of ids) assert.deepEqual(sms.get(`${id}/${g}`)!.values, want);
  }
  // A follower refuses proposals with a hint naming the leader.
  const g = groups[0];
  const follower = hosts.find((h) => !h.groups.get(g)!.isLeader)!;
  await assert.rejects(follower.propose(g, Buffer.from('x')), (e: Error & { code?: string; leaderHint?: string }) => e.code === 'NOT_LEADER' && e.leaderHint === String(ids[leaderOf(g)]));
  // Linearizable read barrier on the leader resolves.
  await hosts[leaderOf(g)].readBarrier(g);
  // Per-group gauges are read from the groups when scraped.
  const text = await registries[leaderOf(g)].metrics();
  assert.match(text, new RegExp(`raftblock_raft_role\\{group="${g}"\\} 2`));
  const commit = Number(new RegExp(`raftblock_raft_commit_index\\{group="${g}"\\} (\\d+)`).exec(text)?.[1]);
  assert.ok(commit >= 20, `commit index gauge ${commit}`);
  // The WAL's counters are read from the WAL when scraped.
  const walBatches = wals[leaderOf(g)].batches;
  assert.match(text, new RegExp(`^raftblock_wal_batches_written_total ${walBatches}$`, 'm'));
  assert.match(text, new RegExp(`^raftblock_wal_bytes_written_total ${4096 * walBatches}$`, 'm'));
  assert.match(text, /^raftblock_wal_segments_created_total 1$/m);
  assert.match(text, /^raftblock_wal_segments_removed_total 3$/m);
});

/** A state machine whose replays are idempotent (value by index), like the block store's. */
class Journal extends Register {
  byIndex = new Map<number, string>();
  override async apply(index: number, term: number, data: Uint8Array): Promise<unknown> {
    this.appliedIndex = index;
    this.appliedTerm = term;
    if (data.byteLength) this.byIndex.set(index, Buffer.from(data).toString());
    return index;
  }
  override async snapshotImage(): Promise<Uint8Array> {
    return Buffer.from(JSON.stringify([...this.byIndex]));
  }
  override async restoreImage(image: Uint8Array, index: number, term: number): Promise<void> {
    this.byIndex = new Map(JSON.parse(Buffer.from(image).toString()) as [number, string][]);
    this.appliedIndex = this.durableIndex = index;
    this.appliedTerm = term;
  }
}

/**
 * A follower partitioned away while the others write and compact catches up through a snapshot
 * pulled from the leader; `serve` answers each image request (the source's state machine, the
 * request's snapshot index), or refuses it by throwing.
 */
async function catchUpThroughSnapshot(t: { after(fn: () => Promise<void>): void }, serve: (sm: Journal, atLeast: unknown) => Promise<Uint8Array>): Promise<void> {
  const ids = [1, 2, 3];
  const hosts: MultiRaftHost[] = [];
  const transports: Transport[] = [];
  const sms: Journal[] = [];
  let isolated = 0;
  const g = 21;
  for (const id of ids) {
    let host!: MultiRaftHost;
    const tr = new Transport({
      nodeId: String(id),
      listen: { host: '127.0.0.1', port: 0 },
      epoch: () => 1,
      handlers: {
        onMessages: (from, _e, msgs) => {
          if (isolated === id || isolated === Number(from)) return; // a partitioned node
          host.receive(Number(from), msgs);
        },
        onRequest: async (_from, _e, op, args) => {
          assert.equal(op, 'snapshot');
          return serve(sms[id - 1], (args as { atLeast?: unknown }).atLeast);
        },
      },
    });
    await tr.start();
    transports.push(tr);
    host = new MultiRaftHost({
      nodeId: id,
      wal: new MemWal() as unknown as Wal,
      transport: tr,
      tickMs: 50,
      keepEntriesAfterCheckpoint: 10,
      checkpointIntervalMs: 3_600_000,
      fetchSnapshot: async (from, group, atLeast) => (await tr.request(String(from), 'snapshot', { g: group, atLeast })) as Uint8Array,
    });
    hosts.push(host);
  }
  for (const tr of transports) for (const [i, other] of transports.entries()) tr.setPeerAddress(String(ids[i]), other.address);
  for (const [i, h] of hosts.entries()) {
    const sm = new Journal();
    sms.push(sm);
    await h.addGroup(g, ids, sm, { campaign: i === 0 });
    h.start();
  }
  t.after(async () => {
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  await until(() => hosts.some((h) => h.groups.get(g)!.isLeader));
  const L = hosts.findIndex((h) => h.groups.get(g)!.isLeader);
  const F = (L + 1) % 3; // stays connected
  const V = (L + 2) % 3; // partitioned away
  isolated = ids[V];
  for (let k = 0; k < 200; k++) await hosts[L].propose(g, Buffer.from(`v${k}`));
  await until(() => sms[F].appliedIndex === sms[L].appliedIndex);
  // Both live replicas checkpoint and drop all but the last 10 entries: the partitioned node
  // can no longer be caught up from the log.
  await hosts[L].checkpointAll();
  await hosts[F].checkpointAll();
  assert.ok(hosts[L].groups.get(g)!.storage.firstIndex() > 100);
  assert.equal(sms[V].byIndex.size, 0);
  isolated = 0;
  await until(() => sms[V].byIndex.size === 200, 20000);
  assert.deepEqual([...sms[V].byIndex].sort((a, b) => a[0] - b[0]), [...sms[L].byIndex].sort((a, b) => a[0] - b[0]));
  // It keeps replicating normally afterwards (through whoever leads now).
  await until(() => hosts.some((h) => h.groups.get(g)!.isLeader));
  await hosts.find((h) => h.groups.get(g)!.isLeader)!.propose(g, Buffer.from('after'));
  await until(() => [...sms[V].byIndex.values()].includes('after'));
}

test('a follower that missed compacted entries catches up through a snapshot pulled from the leader', async (t) => {
  await catchUpThroughSnapshot(t, (sm) => sm.snapshotImage());
});

test('a snapshot pull refused by its source (not yet applied up to the snapshot) is retried, and the image installed covers the snapshot', async (t) => {
  let refused = 0;
  let served = 0;
  await catchUpThroughSnapshot(t, async (sm, atLeast) => {
    assert.ok(typeof atLeast === 'number' && atLeast > 100, `the pull names the snapshot's index (${String(atLeast)})`);
    // The first two attempts find the source behind (as a former leader could be): refused.
    if (refused < 2 || sm.appliedIndex < atLeast) {
      refused++;
      throw new Unavailable(`applied up to ${sm.appliedIndex}, not ${atLeast}`);
    }
    served++;
    return sm.snapshotImage();
  });
  assert.equal(refused, 2);
  assert.equal(served, 1);
});

test('a snapshot pull abandoned because its source changed between two chunks is pulled again', async (t) => {
  let abandoned = 0;
  let served = 0;
  await catchUpThroughSnapshot(t, async (sm) => {
    // The first attempt's source was restored under it (store-an-image-pulled-in-chunks-...).
    if (abandoned === 0) {
      abandoned++;
      throw new SnapshotSourceChanged('the image the pull began with is gone');
    }
    served++;
    return sm.snapshotImage();
  });
  assert.equal(abandoned, 1);
  assert.equal(served, 1);
});

test('a host catches up the ticks an event-loop stall missed before it steps messages: the lease is judged on the real clock', async (t) => {
  const ids = [1, 2, 3];
  const g = 41;
  const { hosts, transports } = await connectHosts(ids, () => new MemWal(), { tickMs: 20 });
  for (const [i, h] of hosts.entries()) {
    await h.addGroup(g, ids, new Register(), { campaign: i === 0 });
    h.start();
  }
  t.after(async () => {
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  // Host 1 campaigns first, but its first votes may reach peers that have not added the group
  // yet; another host can then win. The test needs a leader holding a lease, whichever it is.
  const leaseHolder = (): number => hosts.findIndex((h) => h.groups.get(g)!.isLeader && h.groups.get(g)!.raft.status().leaseValid);
  await until(() => leaseHolder() >= 0);
  const at = leaseHolder();
  const raft = hosts[at].groups.get(g)!.raft;
  // The event loop stalls for 12 ticks (past the 7-tick lease): no timer runs, no tick either.
  const end = performance.now() + 12 * 20;
  while (performance.now() < end);
  assert.equal(raft.status().leaseValid, true, 'the core has not seen the stall yet');
  // Messages arrive first (a step may start a read that judges the lease): the host ticks first.
  hosts[at].receive(ids[(at + 1) % ids.length], []);
  assert.equal(raft.status().leaseValid, false, 'a lease judged after the stall outlived its real duration');
});

/** Starts hosts for `running` (a subset of the group's `voters`); `repairing` replicas' WALs need repair. */
async function startHosts(t: { after(fn: () => Promise<void>): void }, voters: number[], running: number[], repairing: Set<number>, g: number) {
  const made = await connectHosts(
    running,
    (id) => {
      const wal = new MemWal();
      wal.needsRepair = () => repairing.has(id);
      return wal;
    },
    { tickMs: 20 },
  );
  const hosts = new Map(made.hosts.map((h, i) => [running[i], h] as const));
  const transports = made.transports;
  for (const [id, h] of hosts) {
    await h.addGroup(g, voters, new Register(), { campaign: id === running[0] });
    h.start();
  }
  t.after(async () => {
    for (const h of hosts.values()) await h.stop();
    for (const tr of transports) await tr.close();
  });
  return hosts;
}

test('a replica whose WAL needs repair neither grants votes nor wins an election', async (t) => {
  const g = 31;
  // Nodes 1 and 3 of {1,2,3} are up; node 3 needs repair. Node 1 needs node 3's vote and must not get it.
  const muted = await startHosts(t, [1, 2, 3], [1, 3], new Set([3]), g);
  await new Promise((r) => setTimeout(r, 1500)); // > 5 election timeouts of 200 ms
  for (const [id, h] of muted) assert.equal(h.groups.get(g)!.isLeader, false, `node ${id} must not lead while node 3 awaits repair`);
  // The same pair elects a leader when node 3's log is sound, so the silence above was the repair rule.
  const sound = await startHosts(t, [1, 2, 3], [1, 3], new Set(), g);
  await until(() => [...sound.values()].some((h) => h.groups.get(g)!.isLeader));
});

/** A WAL whose appends wait for a gate the test opens: a leader with a stuck device. */
class GatedWal extends MemWal {
  closed = false;
  appendsHeld = 0;
  private release: (() => void)[] = [];
  override append(id: number, entries: { index: number; term: number; type: number; data: Uint8Array }[]): Promise<void> {
    const done = super.append(id, entries);
    if (!this.closed) return done;
    this.appendsHeld++;
    // Its release is taken now, not once the write is done: an open() in between (the write
    // still under way) would otherwise miss it, and the append would be held for good.
    const released = new Promise<void>((r) => this.release.push(r));
    return Promise.all([done, released]).then(() => undefined);
  }
  open(): void {
    this.closed = false;
    for (const r of this.release.splice(0)) r();
  }
}

class AckOnCommitRegister extends Register {
  readonly ackOnCommit = true;
}

/**
 * Three hosts on gated WALs running group `g` (campaigning on the first), stopped after the
 * test; resolves once a leader is elected and has committed an entry `before` of its term.
 */
async function gatedGroup(t: { after(fn: () => Promise<void>): void }, g: number, tickMs: number) {
  const ids = [1, 2, 3];
  const sms: AckOnCommitRegister[] = [];
  const { hosts, wals, transports } = await connectHosts(ids, () => new GatedWal(), { tickMs });
  for (const [i, h] of hosts.entries()) {
    const sm = new AckOnCommitRegister();
    sms.push(sm);
    await h.addGroup(g, ids, sm, { campaign: i === 0 });
    h.start();
  }
  t.after(async () => {
    for (const w of wals) w.open();
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  let lead = -1;
  await until(() => (lead = hosts.findIndex((h) => h.groups.get(g)?.isLeader === true)) >= 0);
  await hosts[lead].propose(g, Buffer.from('before'));
  return { hosts, wals, sms, lead };
}

/** `p`, or a rejection naming `what` if it has not settled within 5 s. */
function within5s<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const giveUp = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), 5000);
  });
  return Promise.race([p, giveUp]).finally(() => clearTimeout(timer));
}

test('a write is answered once both followers made it durable, while the leader’s own WAL write is still stuck', async (t) => {
  const g = 21;
  const { hosts, wals, sms, lead } = await gatedGroup(t, g, 50);
  // The leader has committed an entry of its term (its no-op); now its device gets stuck.
  wals[lead].closed = true;
  await within5s(hosts[lead].propose(g, Buffer.from('while-stuck')), 'the write was not answered while the leader’s WAL was stuck');
  assert.ok(wals[lead].appendsHeld > 0, 'the leader’s own append of the entry is still held');
  assert.equal(sms[lead].values.includes('while-stuck'), false, 'the leader has not applied it: it is not durable here yet');
  // Once the leader's device completes, the entry is applied everywhere, once.
  wals[lead].open();
  await until(() => sms.every((sm) => sm.values.join(',') === 'before,while-stuck'));
});

test('a proposal that cannot commit is answered TimedOut once its deadline passes, and forgotten', async (t) => {
  const g = 22;
  const { hosts, wals, lead } = await gatedGroup(t, g, 20);
  // Every device stuck: nothing more can become durable on a quorum.
  for (const w of wals) w.closed = true;
  const started = Date.now();
  await assert.rejects(within5s(hosts[lead].propose(g, Buffer.from('stuck'), 150, 'write'), 'the proposal was never answered'), (err: Error) => {
    assert.ok(err instanceof TimedOut, `rejected with ${err}`);
    assert.match(err.message, /^write not committed within \d+ ms$/);
    return true;
  });
  const tookMs = Date.now() - started;
  // Well before within5s gives up: answered by its own deadline, not by anything later.
  assert.ok(tookMs >= 150 && tookMs < 4000, `answered after ${tookMs} ms, not about 150 ms`);
  assert.equal(hosts[lead].groups.get(g)?.waiters.size, 0, 'the timed-out proposal is no longer waited for');
});

test('group 0 restarted from its map.bin hands a joining member the map at its snapshot index, not an empty one', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-restart-');
  const noMap = (): void => undefined;
  const g = 0;
  const wal1 = new MemWal();
  // First life of node 1: it founds group 0 alone, fills the map, checkpoints (map.bin at the
  // applied index, the WAL dropped up to there) and stops.
  {
    const { hosts, transports } = await connectHosts([1], () => wal1, { tickMs: 20 });
    const meta = await MetaStore.open(join(dir, 'node-1'), noMap);
    meta.voters = [1];
    await hosts[0].addGroup(g, [1], meta, { campaign: true });
    hosts[0].start();
    await until(() => hosts[0].groups.get(g)!.isLeader);
    for (const cmd of [addNodeCommand(1), addNodeCommand(2), { type: 'createPool', name: 'default', replicas: 1, pgCount: 4, failureDomain: 'host' } as const, { type: 'createVolume', name: 'vol0', sizeBytes: 1 << 20 } as const]) {
      await hosts[0].propose(g, encodeCommand(cmd));
    }
    assert.deepEqual(meta.map.volumes.map((v) => v.name), ['vol0']);
    await hosts[0].stop();
    for (const tr of transports) await tr.close();
  }
  // Second life: node 1 resumes group 0 from map.bin (its log starts after it), then node 2
  // joins the group empty, as a new metadata voter does, and can only catch up by a snapshot.
  const { hosts, transports } = await connectHosts([1, 2], (id) => (id === 1 ? wal1 : new MemWal()), { tickMs: 20 });
  const metas = [await MetaStore.open(join(dir, 'node-1'), noMap), await MetaStore.open(join(dir, 'node-2'), noMap)];
  t.after(async () => {
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  const base = metas[0].durableIndex;
  assert.ok(base > 1 && metas[0].map.epoch > 0, 'node 1 resumes from a checkpointed map');
  await hosts[0].addGroup(g, metas[0].voters, metas[0]);
  await hosts[1].addGroup(g, [], metas[1]);
  for (const h of hosts) h.start();
  await until(() => hosts[0].groups.get(g)!.isLeader);
  hosts[0].proposeConfChange(g, { changes: [{ type: 'addVoter', nodeId: 2 }] });
  await hosts[0].propose(g, encodeCommand({ type: 'createVolume', name: 'vol1', sizeBytes: 1 << 20 }));
  // Adding a voter is a joint change: once it commits, the leader appends the entry leaving the
  // joint configuration, which may come after the volume's. Compare once both applied it too.
  const raft1 = hosts[0].groups.get(g)!.raft;
  await until(() => raft1.status().confState.votersOutgoing.length === 0 && metas[0].appliedIndex === raft1.lastIndex && metas[1].appliedIndex === metas[0].appliedIndex);
  const view = (m: ClusterMap) => ({ epoch: m.epoch, pools: m.pools.map((p) => p.name), volumes: m.volumes.map((v) => v.name), bytes: Buffer.from(encodeMap(m)).toString('base64') });
  assert.deepEqual(view(metas[1].map), view(metas[0].map), `the replicas disagree at applied index ${metas[0].appliedIndex}`);
  assert.deepEqual(view(metas[1].map).volumes, ['vol0', 'vol1']);
  // What node 2 keeps on disk is that same map: a restart finds it there.
  for (const h of hosts) await h.checkpointAll();
  const reopened = await MetaStore.open(join(dir, 'node-2'), noMap);
  assert.equal(reopened.durableIndex, metas[0].appliedIndex);
  assert.deepEqual(view(reopened.map), view(metas[0].map));
});

test('a new group 0 member whose snapshot install is cut short after map.bin, before the WAL record, starts the group over empty and takes its voters from the leader', async (t) => {
  // Torn down in this order: hosts, transports, WAL, then the files.
  const teardown: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const f of teardown.reverse()) await f();
  });
  const dir = await mkdtemp(join(process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp', 'raftblock-meta-cut-'));
  teardown.push(() => rm(dir, { recursive: true, force: true }));
  const noMap = (): void => undefined;
  const g = 0;
  const walOptions = { segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024 };
  const io = new FsBlockIo();
  const node = async (id: number, wal: Wal | MemWal) => {
    let host!: MultiRaftHost;
    const tr = await loopbackTransport(id, () => host);
    host = new MultiRaftHost({ nodeId: id, wal: wal as unknown as Wal, transport: tr, tickMs: 20, fetchSnapshot: async () => new Uint8Array(0) });
    return { host, tr };
  };
  const meet = (a: Transport, b: Transport): void => {
    a.setPeerAddress(b.nodeId, b.address);
    b.setPeerAddress(a.nodeId, a.address);
  };

  // Node 1 founds group 0, fills the map and checkpoints: its snapshot carries the map.
  const n1 = await node(1, new MemWal());
  teardown.push(async () => {
    await n1.host.stop();
    await n1.tr.close();
  });
  const meta1 = await MetaStore.open(join(dir, 'node-1'), noMap);
  meta1.voters = [1];
  await n1.host.addGroup(g, [1], meta1, { campaign: true });
  n1.host.start();
  await until(() => n1.host.groups.get(g)!.isLeader);
  for (const cmd of [addNodeCommand(1), addNodeCommand(2), { type: 'createPool', name: 'default', replicas: 1, pgCount: 4, failureDomain: 'host' } as const]) {
    await n1.host.propose(g, encodeCommand(cmd));
  }
  await n1.host.checkpointAll();

  // Node 2 joins as a new member does (group 0 started empty, no voters) on a real WAL whose
  // record of group 0's snapshot never happens: the crash. Its files at that moment are the
  // disk after the crash; then the record is let through and this life ends.
  const dir2 = join(dir, 'node-2');
  const wal2 = await Wal.open({ dir: join(dir2, 'wal'), io, ...walOptions });
  const record = wal2.installSnapshot.bind(wal2);
  let release!: () => void;
  const cut = new Promise<void>((reached) => {
    wal2.installSnapshot = async (id, snap) => {
      if (id === g) {
        reached();
        await new Promise<void>((r) => (release = r));
      }
      return record(id, snap);
    };
  });
  const n2 = await node(2, wal2);
  meet(n1.tr, n2.tr);
  const meta2 = await MetaStore.open(join(dir2, 'meta'), noMap);
  await n2.host.addGroup(g, [], meta2);
  n2.host.start();
  n1.host.proposeConfChange(g, { changes: [{ type: 'addVoter', nodeId: 2 }] });
  await cut;
  // Nothing of this life reaches the leader any more (it acknowledged nothing of the snapshot).
  await n2.tr.close();
  const crashed = join(dir, 'node-2-after-crash');
  cpSync(dir2, crashed, { recursive: true });
  release();
  await n2.host.stop();
  await wal2.close();

  // What the crash left: the image with its voters, and a WAL that knows group 0 (a term was
  // saved) but holds no log of it. Resuming from the image would put the group at the image's
  // index with nothing in the WAL up to there: the next entry from the leader cannot be logged.
  const image = await MetaStore.open(join(crashed, 'meta'), noMap);
  assert.ok(image.durableIndex > 1, `map.bin at ${image.durableIndex}`);
  assert.deepEqual(image.voters, [...n1.host.groups.get(g)!.raft.confStateAt(image.durableIndex).voters], "the image holds its snapshot's voters");
  const walAfter = await Wal.open({ dir: join(crashed, 'wal'), io, ...walOptions });
  teardown.push(() => walAfter.close());
  assert.ok(walAfter.groupIds().includes(g));
  assert.equal(walAfter.lastIndex(g), 0);
  await assert.rejects(walAfter.append(g, [{ index: image.durableIndex + 1, term: image.appliedTerm, type: 0, data: new Uint8Array(0) }]), /leaves a gap/);

  // The restart: the image is set aside, group 0 starts over empty and with no voters ...
  const opened = await openMetaGroup(join(crashed, 'meta'), 2, walAfter, false, noMap);
  assert.ok(opened.meta);
  assert.equal(opened.discardedIndex, image.durableIndex);
  assert.equal(opened.meta.durableIndex, 0);
  assert.deepEqual(opened.voters, [], 'group 0 restarts with voters its WAL does not vouch for');
  const n2b = await node(2, walAfter);
  teardown.push(async () => {
    await n2b.host.stop();
    await n2b.tr.close();
  });
  await n2b.host.addGroup(g, opened.voters, opened.meta);
  assert.deepEqual(n2b.host.groups.get(g)!.raft.status().confState.voters, []);
  // ... and the leader's snapshot brings the map and the configuration, recorded this time.
  meet(n1.tr, n2b.tr);
  n2b.host.start();
  await n1.host.propose(g, encodeCommand({ type: 'createVolume', name: 'vol1', sizeBytes: 1 << 20 }));
  await until(() => opened.meta!.appliedIndex === meta1.appliedIndex);
  assert.deepEqual(Buffer.from(encodeMap(opened.meta.map)), Buffer.from(encodeMap(meta1.map)));
  assert.deepEqual(n2b.host.groups.get(g)!.raft.status().confState.voters, [1, 2]);
  assert.ok(walAfter.snapshotMeta(g).index > 0, 'the snapshot is recorded in the WAL');
  // A later restart resumes from map.bin, which the WAL now vouches for, with the voters saved with it.
  await n2b.host.checkpointAll();
  const again = await openMetaGroup(join(crashed, 'meta'), 2, walAfter, false, noMap);
  assert.ok(again.meta);
  assert.equal(again.discardedIndex, undefined);
  assert.equal(again.meta.durableIndex, opened.meta.durableIndex);
  assert.deepEqual(again.voters, [1, 2]);
});

test('without an image, group 0 starts with the node itself as voter only on its founder', async (t) => {
  const dir = tempDir(t, 'raftblock-meta-voters-');
  const noMap = (): void => undefined;
  const wal = await Wal.open({ dir: join(dir, 'wal'), io: new FsBlockIo(), segmentBytes: 256 * 1024, maxBatchBytes: 32 * 1024 });
  t.after(() => wal.close());
  // A member that saved a term in group 0 but has no snapshot yet (it crashed waiting for it).
  await wal.saveHardState(0, { term: 3, vote: 0, commit: 0 });
  const member = await openMetaGroup(join(dir, 'm'), 2, wal, false, noMap);
  assert.ok(member.meta);
  assert.deepEqual(member.voters, [], 'a member without an image guessed itself as the only voter');
  // The founder: by its flag, or by the bootstrap snapshot its WAL records.
  const flagged = await openMetaGroup(join(dir, 'f'), 1, wal, true, noMap);
  assert.ok(flagged.meta);
  assert.deepEqual(flagged.voters, [1]);
  await wal.installSnapshot(0, { index: 1, term: 1 });
  const founder = await openMetaGroup(join(dir, 'f'), 1, wal, false, noMap);
  assert.ok(founder.meta);
  assert.deepEqual(founder.voters, [1]);
});

test("a replica's leadChanged signal aborts when it learns of another leader, takes any number of listeners, and is replaced", async (t) => {
  const ids = [1, 2, 3];
  const { hosts, transports } = await connectHosts(ids, () => new MemWal(), { tickMs: 50 });
  for (const [i, h] of hosts.entries()) {
    await h.addGroup(21, ids, new Register(), { campaign: ids[i] === 1 });
    h.start();
  }
  t.after(async () => {
    for (const h of hosts) await h.stop();
    for (const tr of transports) await tr.close();
  });
  // Whoever wins the first election (node 1 campaigns, but a slow start may let another win).
  const leaderAt = (): number => hosts.findIndex((h) => h.groups.get(21)?.isLeader);
  await until(() => leaderAt() >= 0 && hosts.every((h) => h.groups.get(21)!.lead === ids[leaderAt()]));
  const leader = leaderAt();
  const follower = hosts[(leader + 1) % 3].groups.get(21)!;
  const next = ids[(leader + 2) % 3];
  const signal = follower.leadChanged;
  assert.equal(signal.aborted, false);
  assert.equal(follower.leadChanged, signal, 'the same signal while the leader stays');
  // As many waiters as a gateway has requests in flight, without a leak warning.
  const warnings: Error[] = [];
  const onWarning = (w: Error): number => warnings.push(w);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  let aborted = 0;
  for (let i = 0; i < 40; i++) signal.addEventListener('abort', () => aborted++, { once: true });
  hosts[leader].groups.get(21)!.raft.transferLeader(next);
  await until(() => follower.lead === next);
  assert.equal(signal.aborted, true);
  assert.equal(aborted, 40);
  assert.equal(follower.leadChanged.aborted, false, 'a fresh signal for the new leader');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(warnings.map((w) => w.name), []);
});

/** Drops every Raft message between node index `cut` and the others (both ways), from now on. */
function isolate(hosts: MultiRaftHost[], ids: number[], cut: number): void {
  for (const [i, h] of hosts.entries()) {
    const receive = h.receive.bind(h);
    h.receive = (from, msgs) => {
      if (i === cut || from === ids[cut]) return;
      receive(from, msgs);
    };
  }
}

test('a leader cut off from its followers answers its waiting proposers (outcome unknown) an election timeout after it steps down, not at their deadline', async (t) => {
  const g = 23;
  const ids = [1, 2, 3];
  const tickMs = 20;
  const { hosts, lead } = await gatedGroup(t, g, tickMs);
  isolate(hosts, ids, lead);
  // Check-quorum steps it down after an election timeout (10 ticks), then one more passes:
  // well within 5 s, against the proposal's 20 s deadline.
  const deadlineMs = 20_000;
  await assert.rejects(within5s(hosts[lead].propose(g, Buffer.from('cut-off'), deadlineMs, 'write'), 'the proposal waited for its deadline'), (err: Error) => {
    assert.ok(err instanceof Unavailable, `rejected with ${err}`);
    assert.match(err.message, /outcome is unknown/);
    return true;
  });
  assert.equal(hosts[lead].groups.get(g)?.waiters.size, 0, 'the proposal is no longer waited for');
  // The others elected a leader of their own meanwhile.
  await until(() => hosts.some((h, i) => i !== lead && h.groups.get(g)?.isLeader === true));
});

test('a group removed while its checkpoint runs is closed only after that checkpoint ends', async (t) => {
  const events: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  class SlowCheckpoint extends Register {
    override async checkpoint(): Promise<number> {
      events.push('checkpoint started');
      await gate;
      events.push('checkpoint ended');
      return super.checkpoint();
    }
    override async close(): Promise<void> {
      events.push('closed');
    }
  }
  const { hosts, transports } = await connectHosts([1], () => new MemWal(), { tickMs: 20 });
  const [h] = hosts;
  t.after(async () => {
    release(); // a failed check must not leave the checkpoint, and so stop(), waiting
    await h.stop();
    await transports[0].close();
  });
  await h.addGroup(21, [1], new SlowCheckpoint(), { campaign: true });
  h.start();
  await until(() => h.groups.get(21)?.isLeader === true);
  await h.propose(21, Buffer.from('v'));
  const checkpoint = h.checkpointAll();
  await until(() => events.includes('checkpoint started'));
  const removal = h.removeGroup(21);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(events, ['checkpoint started'], 'the store was closed under a running checkpoint');
  release();
  await Promise.all([checkpoint, removal]);
  assert.deepEqual(events, ['checkpoint started', 'checkpoint ended', 'closed']);
});

for (const drainReadies of [false, true]) {
  test(`a group removed ${drainReadies ? 'draining its Readies sends their acknowledgements' : 'without draining its Readies (a retirement) sends none of their acknowledgements'}`, async (t) => {
    const g = 24;
    const { hosts, wals, lead } = await gatedGroup(t, g, 50);
    const f = (lead + 1) % 3;
    const followerId = f + 1;
    const matchAtLeader = (): number => hosts[lead].groups.get(g)?.raft.status().progress?.get(followerId)?.match ?? -1;
    // The follower's device holds its next append: its acknowledgement waits in its Ready.
    wals[f].closed = true;
    await hosts[lead].propose(g, Buffer.from('held-at-follower'));
    await until(() => wals[f].appendsHeld > 0);
    const index = hosts[lead].groups.get(g)!.raft.lastIndex;
    assert.ok(matchAtLeader() < index, 'the follower has not acknowledged it yet');
    // Removed here (retired, say), then its device completes.
    const removal = hosts[f].removeGroup(g, { drainReadies });
    wals[f].open();
    await removal;
    if (drainReadies) {
      await until(() => matchAtLeader() === index, 10_000, 'the acknowledgement of a drained Ready reaching the leader');
    } else {
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(matchAtLeader() < index, `a removed group's held acknowledgement reached the leader (match ${matchAtLeader()}, entry ${index})`);
    }
  });
}
