/**
 * `raftblock start` end to end: three real node processes on real sockets and disks, driven
 * with real NBD clients (nbdinfo, qemu-io, fio). One cluster is shared by the tests in order:
 * serve, verify through two gateways, survive a kill -9 of a PG leader, stop + restart, kill -9
 * of everything + restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { encodeFrame } from '../../src/cluster/frame.js';
import { nodeMallocTunables, nodeV8Flags } from '../../src/cli/node-flags.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { currentPids, freeBase, startCluster, stopCluster } from './start-cluster.js';

/** Runs a tool without blocking this process (the cluster's pipes keep draining). */
async function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await runAsync(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.out.slice(-3000)}`);
  return r.stdout;
}

function runAsync(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ code: number | null; out: string; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stdout = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      stdout += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, stdout });
    });
  });
}

function fioArgs(uri: string, name: string, offset: string, size: string, extra: string[] = []): string[] {
  return [
    '--ioengine=nbd', `--uri=${uri}`, `--name=${name}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', `--offset=${offset}`, `--size=${size}`,
    '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--randrepeat=1', '--randseed=1234', '--verify_state_save=0', ...extra,
  ];
}

/**
 * What a failed verify pass needs to be explained: each PG's applied index and data digest on
 * every node, and the lines of each node's log about snapshots, restores, repairs and
 * failures (the cluster's directory is removed with the test).
 */
async function clusterEvidence(dir: string, http: string[]): Promise<string> {
  const lines: string[] = [];
  const groups = await status(http[0])
    .then((s) => s.groups.filter((g) => g.groupId !== 0).map((g) => g.groupId))
    .catch((err: Error) => (lines.push(`status: ${err.message}`), [] as number[]));
  for (const g of groups) {
    const d = await Promise.all(http.map((h) => fetch(`http://${h}/v1/groups/${g}/digest`).then((r) => r.text(), (err: Error) => err.message)));
    lines.push(`group ${g}: ${d.join(' | ')}`);
  }
  for (let id = 1; id <= http.length; id++) {
    let log = '';
    try {
      log = readFileSync(join(dir, `node-${id}.log`), 'utf8');
    } catch (err) {
      log = (err as Error).message;
    }
    const notable = log.split('\n').filter((l) => /snapshot|image|restor|repair|rebuil|cut short|replay|"level":"(warn|error)"/.test(l));
    lines.push(`node ${id} log (${notable.length} notable lines, last 40):`, ...notable.slice(-40));
  }
  return lines.join('\n');
}

/** fio's verify-only pass over a job's region; on failure, the cluster's evidence with it. */
async function verifyRegion(dir: string, http: string[], uri: string, name: string, offset: string, size: string): Promise<void> {
  const r = await runAsync('fio', fioArgs(uri, name, offset, size, ['--verify_only=1']));
  if (r.code === 0) return;
  assert.fail(`fio verify of ${name} (${size} at ${offset}) failed (${r.code}): ${r.out.slice(-2000)}\n--- evidence ---\n${await clusterEvidence(dir, http)}`);
}

/**
 * Waits until every replica of every PG holds the same bytes at the same applied index (the
 * digest endpoint), at most 60 s; the last digests are in the failure.
 */
async function replicasAgree(http: string[]): Promise<void> {
  const groups = (await status(http[0])).groups.filter((g) => g.groupId !== 0).map((g) => g.groupId);
  const deadline = Date.now() + 60_000;
  for (const g of groups) {
    for (;;) {
      const d = await Promise.all(http.map(async (h) => (await (await fetch(`http://${h}/v1/groups/${g}/digest`)).json()) as { appliedIndex: number; digest: string }));
      if (d.every((x) => x.appliedIndex === d[0].appliedIndex && x.digest === d[0].digest)) break;
      assert.ok(Date.now() < deadline, `group ${g} replicas converge: ${JSON.stringify(d)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

interface HttpStatus {
  groups: { groupId: number; role: string; leader: number; voters: number[] }[];
}

async function status(http: string): Promise<HttpStatus> {
  const res = await fetch(`http://${http}/v1/status`);
  return (await res.json()) as HttpStatus;
}

test('raftblock start: vol0 over NBD on every node, replicated, surviving a leader kill, stop/restart and kill -9 of every node', async (t) => {
  if (!requireTools(t, 'nbdinfo', 'qemu-io', 'fio')) return;
  const dir = tempDir(t, 'raftblock-start-');
  const ports = { nbd: await freeBase(3), http: await freeBase(3), peer: await freeBase(3) };
  let cluster = await startCluster(t, dir, ports);
  const uri = (i: number): string => `nbd://${cluster.ready.nbd[i]}/vol0`;

  await t.test('every node process runs with the storage nodes’ V8 flags and malloc tunables', () => {
    for (const pid of cluster.ready.pids) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      for (const flag of nodeV8Flags) assert.ok(argv.includes(flag), `node ${pid} runs without ${flag}: ${argv.join(' ')}`);
      // glibc cuts the string in place as it parses it at start, so /proc shows the first
      // tunable only (`ld.so --list-tunables` under the same variable shows all three taken).
      const tunables = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').find((v) => v.startsWith('GLIBC_TUNABLES='));
      assert.ok(tunables?.startsWith(`GLIBC_TUNABLES=${nodeMallocTunables[0]}`), `node ${pid} runs with ${tunables ?? 'no GLIBC_TUNABLES'}`);
    }
  });

  await t.test('the nodes prove the cluster key: a peer connection without it is closed before its first frame', async () => {
    const keyPath = join(dir, 'cluster.key');
    assert.equal(statSync(keyPath).mode & 0o777, 0o600, 'the cluster key is readable by its owner only');
    for (const pid of cluster.ready.pids) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv[argv.indexOf('--cluster-key-file') + 1], keyPath, `node ${pid} runs without the key: ${argv.join(' ')}`);
    }
    const unauthenticated = async (): Promise<number> =>
      Number(/^raftblock_transport_unauthenticated_connections_total (\d+)/m.exec(await (await fetch(`http://${cluster.ready.http[0]}/metrics`)).text())?.[1] ?? 0);
    const before = await unauthenticated();
    // A frame as a keyless node sends it: the node reads none of it and closes the connection.
    const map = (await (await fetch(`http://${cluster.ready.http[0]}/v1/map`)).json()) as { clusterId?: string };
    const closed = await new Promise<boolean>((resolve, reject) => {
      const s = createConnection({ host: '127.0.0.1', port: ports.peer }, () => {
        s.write(encodeFrame({ from: '2', addr: '127.0.0.1:1', epoch: 1_000_000, c: map.clusterId ?? '', reqs: [{ id: 1, op: 'getMap', a: {} }] }));
      });
      s.on('data', () => resolve(false));
      s.on('close', () => resolve(true));
      s.on('error', reject);
      setTimeout(() => resolve(false), 15_000).unref();
    });
    assert.ok(closed, 'the connection stayed open or was answered');
    assert.equal(await unauthenticated(), before + 1);
  });

  await t.test('nbdinfo sees the 1 GiB volume with multi-conn, trim, zero and block status', async () => {
    const info = JSON.parse(await run('nbdinfo', ['--json', uri(0)])) as { exports: { 'export-size': number; can_multi_conn: boolean; can_trim: boolean; can_zero: boolean; contexts: string[] }[] };
    const e = info.exports[0];
    assert.equal(e['export-size'], 1024 ** 3);
    assert.equal(e.can_multi_conn, true);
    assert.equal(e.can_trim, true);
    assert.equal(e.can_zero, true);
    assert.ok(e.contexts.includes('base:allocation'));
  });

  await t.test('a write through node 0 reads back through node 2; zero and discard read as zeros', async () => {
    await run('qemu-io', ['-f', 'raw', uri(0), '-c', 'write -P 0xa5 1M 192k', '-c', 'write -P 0x3c 7340544 1536', '-c', 'flush']);
    await run('qemu-io', ['-f', 'raw', uri(2), '-c', 'read -P 0xa5 1M 192k', '-c', 'read -P 0x3c 7340544 1536', '-c', 'read -P 0 7342080 512']);
    await run('qemu-io', ['-f', 'raw', uri(1), '-c', 'write -z 1M 64k', '-c', 'discard 1114112 64k']);
    await run('qemu-io', ['-f', 'raw', uri(0), '-c', 'read -P 0 1M 128k', '-c', 'read -P 0xa5 1179648 64k']);
    // Block status (base:allocation): qemu-io's zero keeps the range allocated (NO_HOLE), so it
    // is zeros but no hole; the discard is a hole; the rest of the write is data.
    const map = JSON.parse(await run('nbdinfo', ['--map', '--json', uri(2)])) as { offset: number; length: number; type: number }[];
    const typeAt = (at: number): number | undefined => map.find((e) => e.offset <= at && at < e.offset + e.length)?.type;
    const KiB = 1024;
    const MiB = 1024 * KiB;
    for (const [at, type, what] of [
      [MiB, 2, 'the zeroed range: zero, allocated'],
      [MiB + 64 * KiB - 1, 2, 'the zeroed range: zero, allocated'],
      [MiB + 64 * KiB, 3, 'the discarded range: hole, zero'],
      [MiB + 128 * KiB - 1, 3, 'the discarded range: hole, zero'],
      [MiB + 128 * KiB, 0, 'the written range: data'],
      [MiB + 192 * KiB - 1, 0, 'the written range: data'],
      [512 * MiB, 3, 'a range never written: hole, zero'],
    ] as const) {
      assert.equal(typeAt(at), type, `block status at ${at} (${what}): ${JSON.stringify(map.filter((e) => e.offset < 2 * MiB))}`);
    }
  });

  await t.test('fio crc32c verify through the gateways of node 0 and node 1', async () => {
    await run('fio', fioArgs(uri(0), 'via-node0', '64M', '16M'));
    await run('fio', fioArgs(uri(1), 'via-node1', '128M', '16M'));
  });

  await t.test('the metadata group has three voters: with node 1 frozen, a volume is created through node 2', async () => {
    const s = await status(cluster.ready.http[2]);
    assert.deepEqual(s.groups.find((g) => g.groupId === 0)!.voters, [1, 2, 3]);
    process.kill(cluster.ready.pids[0], 'SIGSTOP');
    try {
      const res = await fetch(`http://${cluster.ready.http[1]}/v1/volumes`, { method: 'POST', body: JSON.stringify({ name: 'meta-ha', sizeBytes: 64 * 1024 * 1024 }) });
      // 201, or 200 when the node's first attempt reached the frozen leader and its retry at the
      // new one found the volume its lost attempt had created (an identical create is done).
      assert.ok(res.status === 201 || res.status === 200, `${res.status} ${await res.text()}`);
      // The create is answered once the reachable nodes hold the new map: node 3 serves it now.
      const info = JSON.parse(await run('nbdinfo', ['--json', `nbd://${cluster.ready.nbd[2]}/meta-ha`])) as { exports: { 'export-size': number }[] };
      assert.equal(info.exports[0]['export-size'], 64 * 1024 * 1024);
    } finally {
      process.kill(cluster.ready.pids[0], 'SIGCONT');
    }
  });

  await t.test('a node frozen while 160 MiB are written catches up through streamed snapshots; replicas agree', async () => {
    process.kill(cluster.ready.pids[2], 'SIGSTOP');
    try {
      await run('fio', ['--ioengine=nbd', `--uri=${uri(0)}`, '--name=bulk', '--rw=write', '--bs=512k', '--iodepth=8', '--offset=600M', '--size=160M']);
      await new Promise((r) => setTimeout(r, 3000)); // a checkpoint compacts the logs
    } finally {
      process.kill(cluster.ready.pids[2], 'SIGCONT');
    }
    await replicasAgree(cluster.ready.http);
    const metrics = await (await fetch(`http://${cluster.ready.http[2]}/metrics`)).text();
    const installed = Number(/^raftblock_raft_snapshots_installed_total (\d+)/m.exec(metrics)?.[1] ?? 0);
    assert.ok(installed > 0, 'node 3 caught up by snapshot, not only from the log');
  });

  await t.test('PG leadership follows the I/O: after seconds of writes through node 1, node 1 leads most PGs', async () => {
    // Elections may already have made node 1 lead every PG (a few PGs: now and then).
    const ledElsewhere = (await status(cluster.ready.http[0])).groups.filter((g) => g.groupId !== 0 && g.role !== 'leader').length;
    await run('fio', [...fioArgs(uri(0), 'affinity', '800M', '224M'), '--time_based', '--runtime=6', '--verify=0', '--do_verify=0']);
    // Generous: a PG handed to node 1 that then loses it to an election waits out a 30 s
    // handover cooldown before it comes back. Passing runs leave the loop in seconds.
    const deadline = Date.now() + 45_000;
    for (;;) {
      const s = await status(cluster.ready.http[0]);
      const pgs = s.groups.filter((g) => g.groupId !== 0);
      const local = pgs.filter((g) => g.role === 'leader').length;
      if (local >= Math.ceil(pgs.length * 0.75)) break;
      assert.ok(Date.now() < deadline, `node 1 leads ${local} of ${pgs.length} PGs`);
      await run('fio', [...fioArgs(uri(0), 'affinity', '800M', '224M'), '--time_based', '--runtime=2', '--verify=0', '--do_verify=0']);
    }
    const handed = await Promise.all(cluster.ready.http.slice(1).map(async (h) => Number(/^raftblock_pg_leader_handovers_total (\d+)/m.exec(await (await fetch(`http://${h}/metrics`)).text())?.[1] ?? 0)));
    if (ledElsewhere > 0) assert.ok(handed[0] + handed[1] > 0, 'nodes 2 and 3 handed PGs over');
  });

  await t.test('kill -9 of a PG leader during a fio verify run: I/O resumes, the node restarts and catches up', async () => {
    // Leadership follows the I/O, so pick the node that leads the most PGs now, and drive fio
    // through another node's gateway while it dies.
    const led = await Promise.all(cluster.ready.http.map(async (h) => (await status(h)).groups.filter((g) => g.groupId !== 0 && g.role === 'leader').length));
    const victim = led.indexOf(Math.max(...led));
    const gateway = (victim + 1) % 3;
    const checker = (victim + 2) % 3;
    assert.ok(led[victim] > 0, `node ${victim + 1} leads some PGs`);
    const fio = runAsync('fio', fioArgs(uri(gateway), 'failover', '256M', '24M', ['--time_based=0']));
    await new Promise((r) => setTimeout(r, 700));
    process.kill(cluster.ready.pids[victim], 'SIGKILL');
    const r = await fio;
    assert.equal(r.code, 0, `fio verify across a leader kill failed:\n${r.out.slice(-2000)}`);
    const deadline = Date.now() + 60_000;
    while (!cluster.events.some((e) => e.event === 'node-restarted' && e.id === victim + 1)) {
      assert.ok(Date.now() < deadline, `node ${victim + 1} restarted`);
      await new Promise((res) => setTimeout(res, 200));
    }
    // The restarted node catches up: every PG it holds knows its leader again.
    for (;;) {
      const b = await status(cluster.ready.http[victim]).catch(() => undefined);
      if (b && b.groups.length > 1 && b.groups.filter((g) => g.groupId !== 0 && g.leader === 0).length === 0) break;
      assert.ok(Date.now() < deadline, `node ${victim + 1} rejoined every PG`);
      await new Promise((res) => setTimeout(res, 300));
    }
    await verifyRegion(dir, cluster.ready.http, uri(checker), 'failover', '256M', '24M');
  });

  await t.test('stop with SIGINT and start again on the same directory, now with --peer-tls: the data is still there', async () => {
    await stopCluster(cluster);
    // A running cluster adopts TLS by a stop and start of all its nodes.
    cluster = await startCluster(t, dir, ports, ['--peer-tls']);
    for (const h of cluster.ready.http) {
      const metrics = await (await fetch(`http://${h}/metrics`)).text();
      const tls = Number(/^raftblock_transport_tls_connections_total (\d+)/m.exec(metrics)?.[1] ?? 0);
      assert.ok(tls >= 1, `the node at ${h} made no TLS connection to a peer`);
      // The WAL's counters (since this start): whole device blocks, at least a record a batch.
      const wal = (name: string): number => Number(new RegExp(`^raftblock_wal_${name}_total (\\d+)`, 'm').exec(metrics)?.[1] ?? NaN);
      assert.ok(wal('batches_written') >= 1, `the node at ${h} wrote no WAL batch since it started`);
      assert.ok(wal('records_written') >= wal('batches_written'));
      assert.equal(wal('bytes_written') % 4096, 0, `WAL bytes ${wal('bytes_written')} are not whole 4 KiB blocks`);
      assert.ok(wal('bytes_written') >= 4096 * wal('batches_written'));
    }
    await run('qemu-io', ['-f', 'raw', uri(2), '-c', 'read -P 0xa5 1179648 64k', '-c', 'read -P 0x3c 7340544 1536', '-c', 'read -P 0 1M 128k']);
    await verifyRegion(dir, cluster.ready.http, uri(0), 'via-node0', '64M', '16M');
    // Every replica, not only the ones that lead now: a replica whose files lost data (a
    // restore's wipe that raced an open) shows here whoever leads.
    await replicasAgree(cluster.ready.http);
  });

  await t.test('kill -9 of every node, then restart: every acknowledged write is there', async () => {
    await run('fio', fioArgs(uri(1), 'before-crash', '512M', '16M'));
    cluster.proc.kill('SIGKILL');
    for (const pid of currentPids(cluster)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    // Without the flag: DIR/cluster.json remembers --peer-tls.
    cluster = await startCluster(t, dir, ports);
    for (const pid of currentPids(cluster)) {
      assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--peer-tls'), `node ${pid} restarted without the remembered --peer-tls`);
    }
    await verifyRegion(dir, cluster.ready.http, uri(2), 'before-crash', '512M', '16M');
    await verifyRegion(dir, cluster.ready.http, uri(0), 'failover', '256M', '24M');
    await replicasAgree(cluster.ready.http);
    await stopCluster(cluster);
  });
});
