/**
 * `raftblock start` end to end: three real node processes on real sockets and disks, driven
 * with real NBD clients (nbdinfo, qemu-io, fio). One cluster is shared by the tests in order:
 * serve, verify through two gateways, survive a kill -9 of a PG leader, stop + restart, kill -9
 * of everything + restart.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { cliPath } from '../helpers/paths.js';
import { requireTools, tempDir } from '../helpers/tools.js';

interface Ready {
  nbd: string[];
  http: string[];
  pids: number[];
}

interface Cluster {
  proc: ChildProcess;
  ready: Ready;
  events: Record<string, unknown>[];
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port with `count` consecutive free ports after it, for each of nbd, http, peer. */
async function freeBase(count: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
  throw new Error('no free port range');
}

function startCluster(t: TestContext, dir: string, ports: { nbd: number; http: number; peer: number }, timeoutMs = 90_000): Promise<Cluster> {
  const proc = spawn(
    process.execPath,
    [cliPath, 'start', '--data', dir, '--nodes', '3', '--nbd-port', String(ports.nbd), '--http-port', String(ports.http), '--peer-port', String(ports.peer)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RAFTBLOCK_LOG: 'warn' } },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const events: Record<string, unknown>[] = [];
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    const last = events.find((e) => e.event === 'ready') as unknown as Ready | undefined;
    for (const pid of last?.pids ?? []) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const e of events) {
      if (e.event === 'node-restarted') {
        try {
          process.kill(e.pid as number, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`raftblock start not ready in ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const e = JSON.parse(line) as Record<string, unknown>;
      events.push(e);
      if (e.event === 'ready') {
        clearTimeout(timer);
        resolve({ proc, ready: e as unknown as Ready, events });
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`raftblock start exited with ${code}: ${stderr}`));
    });
  });
}

/** The node pids now (restarted nodes have new ones). */
function currentPids(c: Cluster): number[] {
  const pids = [...c.ready.pids];
  for (const e of c.events) if (e.event === 'node-restarted') pids[(e.id as number) - 1] = e.pid as number;
  return pids;
}

async function stopCluster(c: Cluster): Promise<void> {
  const exited = new Promise<number | null>((r) => c.proc.once('exit', (code) => r(code)));
  c.proc.kill('SIGINT');
  assert.equal(await exited, 0, 'raftblock start exits 0 after SIGINT');
  for (const pid of currentPids(c)) assert.throws(() => process.kill(pid, 0), 'every node process is gone');
}

function run(cmd: string, args: string[], timeoutMs = 120_000): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function runAsync(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.once('exit', (code) => resolve({ code, out }));
  });
}

function fioArgs(uri: string, name: string, offset: string, size: string, extra: string[] = []): string[] {
  return [
    '--ioengine=nbd', `--uri=${uri}`, `--name=${name}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', `--offset=${offset}`, `--size=${size}`,
    '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--randrepeat=1', '--randseed=1234', ...extra,
  ];
}

interface HttpStatus {
  groups: { groupId: number; role: string; leader: number }[];
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

  await t.test('nbdinfo sees the 1 GiB volume with multi-conn, trim, zero and block status', () => {
    const info = JSON.parse(run('nbdinfo', ['--json', uri(0)])) as { exports: { 'export-size': number; can_multi_conn: boolean; can_trim: boolean; can_zero: boolean; contexts: string[] }[] };
    const e = info.exports[0];
    assert.equal(e['export-size'], 1024 ** 3);
    assert.equal(e.can_multi_conn, true);
    assert.equal(e.can_trim, true);
    assert.equal(e.can_zero, true);
    assert.ok(e.contexts.includes('base:allocation'));
  });

  await t.test('a write through node 0 reads back through node 2; zero and discard read as zeros', () => {
    run('qemu-io', ['-f', 'raw', uri(0), '-c', 'write -P 0xa5 1M 192k', '-c', 'write -P 0x3c 7340544 1536', '-c', 'flush']);
    run('qemu-io', ['-f', 'raw', uri(2), '-c', 'read -P 0xa5 1M 192k', '-c', 'read -P 0x3c 7340544 1536', '-c', 'read -P 0 7342080 512']);
    run('qemu-io', ['-f', 'raw', uri(1), '-c', 'write -z 1M 64k', '-c', 'discard 1114112 64k']);
    run('qemu-io', ['-f', 'raw', uri(0), '-c', 'read -P 0 1M 128k', '-c', 'read -P 0xa5 1179648 64k']);
  });

  await t.test('fio crc32c verify through the gateways of node 0 and node 1', () => {
    run('fio', fioArgs(uri(0), 'via-node0', '64M', '16M'));
    run('fio', fioArgs(uri(1), 'via-node1', '128M', '16M'));
  });

  await t.test('kill -9 of a PG leader during a fio verify run: I/O resumes, the node restarts and catches up', async () => {
    const s = await status(cluster.ready.http[1]);
    const led = s.groups.filter((g) => g.groupId !== 0 && g.role === 'leader').length;
    assert.ok(led > 0, 'node 2 leads some PGs');
    // fio through node 0 while node 2 (a leader of several PGs) dies.
    const fio = runAsync('fio', fioArgs(uri(0), 'failover', '256M', '24M', ['--time_based=0']));
    await new Promise((r) => setTimeout(r, 700));
    process.kill(cluster.ready.pids[1], 'SIGKILL');
    const r = await fio;
    assert.equal(r.code, 0, `fio verify across a leader kill failed:\n${r.out.slice(-2000)}`);
    const deadline = Date.now() + 60_000;
    while (!cluster.events.some((e) => e.event === 'node-restarted' && e.id === 2)) {
      assert.ok(Date.now() < deadline, 'node 2 restarted');
      await new Promise((res) => setTimeout(res, 200));
    }
    // The restarted node catches up: every PG it holds reaches the leader's commit.
    for (;;) {
      const [a, b] = await Promise.all([status(cluster.ready.http[0]).catch(() => undefined), status(cluster.ready.http[1]).catch(() => undefined)]);
      if (a && b && b.groups.length > 1) {
        const lagging = b.groups.filter((g) => g.groupId !== 0 && g.leader === 0);
        if (lagging.length === 0) break;
      }
      assert.ok(Date.now() < deadline, 'node 2 rejoined every PG');
      await new Promise((res) => setTimeout(res, 300));
    }
    run('fio', fioArgs(uri(1), 'failover', '256M', '24M', ['--verify_only=1']));
  });

  await t.test('stop with SIGINT and start again on the same directory: the data is still there', async () => {
    await stopCluster(cluster);
    cluster = await startCluster(t, dir, ports);
    run('qemu-io', ['-f', 'raw', uri(2), '-c', 'read -P 0xa5 1179648 64k', '-c', 'read -P 0x3c 7340544 1536', '-c', 'read -P 0 1M 128k']);
    run('fio', fioArgs(uri(0), 'via-node0', '64M', '16M', ['--verify_only=1']));
  });

  await t.test('kill -9 of every node, then restart: every acknowledged write is there', async () => {
    run('fio', fioArgs(uri(1), 'before-crash', '512M', '16M'));
    cluster.proc.kill('SIGKILL');
    for (const pid of currentPids(cluster)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    cluster = await startCluster(t, dir, ports);
    run('fio', fioArgs(uri(2), 'before-crash', '512M', '16M', ['--verify_only=1']));
    run('fio', fioArgs(uri(0), 'failover', '256M', '24M', ['--verify_only=1']));
    await stopCluster(cluster);
  });
});
