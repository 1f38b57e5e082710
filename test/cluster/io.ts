/**
 * Client-side I/O for the cluster tests: fio runs with crc32c verification, and python3-libnbd
 * clients. Each runs as its own process (on loopback, or inside a node's namespace).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestCluster } from '../helpers/cluster.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { requireCapability } from '../helpers/tools.js';
import type { TestContext } from 'node:test';

/** One direction of a fio job's JSON result (completion latencies in ns). */
export interface FioDirection {
  io_bytes: number;
  iops: number;
  clat_ns?: { max: number; mean: number };
}

export interface FioResult {
  code: number | null;
  stdout: string;
  stderr: string;
  job?: { error: number; write: FioDirection; read: FioDirection };
}

export interface FioRun {
  proc: ChildProcess;
  done: Promise<FioResult>;
}

/** fio's nbd engine with crc32c verification, through node `via`'s gateway. */
export function startFio(cluster: TestCluster, via: number, args: string[], cwd: string): FioRun {
  const fioArgs = [
    '--ioengine=nbd',
    `--uri=${cluster.nbdUri(via)}`,
    '--output-format=json',
    '--verify=crc32c',
    '--verify_fatal=1',
    '--exitall_on_error=1',
    '--verify_state_save=0',
    // Jobs as threads of one process: a SIGKILL ends all of fio (a forked job outlived it,
    // holding the pipes open, so 'close' never came).
    '--thread',
    ...args,
  ];
  const opts = { cwd, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
  const proc = cluster.net ? cluster.net.spawnIn(via, 'fio', fioArgs, opts) : spawn('fio', fioArgs, opts);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  proc.stdout!.on('data', (c: Buffer) => out.push(c));
  proc.stderr!.on('data', (c: Buffer) => err.push(c));
  const done = new Promise<FioResult>((resolve) => {
    // 'close', not 'exit': the end of fio's JSON may still be unread at its exit (see runProcess).
    proc.once('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      let job: FioResult['job'];
      try {
        job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: FioResult['job'][] }).jobs[0];
      } catch {
        job = undefined;
      }
      resolve({ code, stdout, stderr, job });
    });
  });
  return { proc, done };
}

export function describeFio(r: FioResult): string {
  return `fio exit ${r.code}, error ${r.job?.error}\nstderr: ${r.stderr.slice(-2000)}\nstdout: ${r.stdout.slice(-1500)}`;
}

export const blockClientPath = join(repoRoot, 'test', 'cluster', 'py', 'block_client.py');
/** python3-libnbd lives in the distribution's python, not in whatever python3 is first on PATH. */
export const systemPython = '/usr/bin/python3';

/** Requires python3-libnbd in the system python; see requireCapability. */
export function requirePythonNbd(t: TestContext): boolean {
  return requireCapability(t, havePythonNbd(), 'python3-libnbd missing (bash scripts/install-deps.sh)');
}

/** True when the system python has libnbd's bindings (python3-libnbd). */
export function havePythonNbd(): boolean {
  return spawnSync(systemPython, ['-c', 'import nbd'], { stdio: 'ignore' }).status === 0;
}

export interface BlockOpResult {
  block: number;
  result: 'ok' | 'error' | 'timeout' | 'skipped';
  value?: string | null;
  error?: string;
}

/**
 * Everything a child wrote, once its stdout and stderr are closed: on 'close', not 'exit', at
 * which its last output may still be unread (a Jepsen history then lost its last operations,
 * and a final read of a tag they wrote looked like a read of a value nobody wrote).
 */
export function runProcess(proc: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  proc.stdout!.on('data', (c: Buffer) => out.push(c));
  proc.stderr!.on('data', (c: Buffer) => err.push(c));
  return new Promise((resolve) => proc.once('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() })));
}

function spawnClient(cluster: TestCluster, via: number, args: string[]): ChildProcess {
  const opts = { stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
  const full = [blockClientPath, ...args];
  return cluster.net ? cluster.net.spawnIn(via, systemPython, full, opts) : spawn(systemPython, full, opts);
}

/**
 * Writes `tag` to (or reads) each block through node `via`'s gateway, one connection, each
 * operation with a deadline. Blocks are `blockBytes` units of the volume.
 */
export async function blockOps(
  cluster: TestCluster,
  via: number,
  op: 'write' | 'read',
  blocks: readonly number[],
  opts: { tag?: string; timeoutS: number; volume?: string; blockBytes?: number },
): Promise<BlockOpResult[]> {
  const args = ['ops', cluster.nbdUri(via, opts.volume), op, String(opts.blockBytes ?? 4096), String(opts.timeoutS), opts.tag ?? '-', ...blocks.map(String)];
  const r = await runProcess(spawnClient(cluster, via, args));
  if (r.code !== 0) throw new Error(`block client (${op} via node ${via}) exited ${r.code}: ${r.stderr.slice(-1500)}`);
  return r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as BlockOpResult);
}

/** Writes `tag` to every block through node `via`; every write must succeed. */
export async function writeTagged(cluster: TestCluster, via: number, blocks: readonly number[], tag: string, timeoutS = 20): Promise<void> {
  const w = await blockOps(cluster, via, 'write', blocks, { tag, timeoutS });
  assert.ok(w.every((x) => x.result === 'ok'), `writes via node ${via}: ${JSON.stringify(w)}`);
}

/** Reads every block through node `via`; each must hold `tag`. */
export async function expectTagged(cluster: TestCluster, via: number, blocks: readonly number[], tag: string, timeoutS = 20): Promise<void> {
  const r = await blockOps(cluster, via, 'read', blocks, { timeoutS });
  assert.deepEqual(r.map((x) => x.value), blocks.map(() => tag), `reads via node ${via}: ${JSON.stringify(r)}`);
}

/** One Jepsen-style client: returns its history lines (block format). */
export function startJepsenClient(
  cluster: TestCluster,
  via: number,
  opts: { process: number; blocks: readonly number[]; durationS: number; timeoutS: number; seed: number; blockBytes?: number; volume?: string },
): { proc: ChildProcess; done: Promise<string> } {
  const args = [
    'jepsen',
    cluster.nbdUri(via, opts.volume),
    String(opts.process),
    String(opts.blockBytes ?? 4096),
    String(opts.timeoutS),
    String(opts.durationS),
    String(opts.seed),
    ...opts.blocks.map(String),
  ];
  const proc = spawnClient(cluster, via, args);
  const done = runProcess(proc).then((r) => {
    if (r.code !== 0) throw new Error(`jepsen client ${opts.process} exited ${r.code}: ${r.stderr.slice(-1500)}`);
    return r.stdout;
  });
  return { proc, done };
}

/**
 * Reads every block through node `via` and returns the reads as `block` history lines, with
 * CLOCK_MONOTONIC times (the clock the python clients use): each read's window spans the whole
 * call, which only weakens what it claims.
 */
export async function finalReadsAsHistory(cluster: TestCluster, via: number, process: number, blocks: readonly number[], timeoutS = 15): Promise<string> {
  const invokedAt = Number(globalThis.process.hrtime.bigint());
  const results = await blockOps(cluster, via, 'read', blocks, { timeoutS });
  const doneAt = Number(globalThis.process.hrtime.bigint());
  const lines: string[] = [];
  results.forEach((r, i) => {
    const p = process * 100 + i; // one process per read: each has one operation in flight
    lines.push(JSON.stringify({ process: p, type: 'invoke', f: 'read', block: r.block, time: invokedAt }));
    if (r.result === 'ok') lines.push(JSON.stringify({ process: p, type: 'ok', f: 'read', block: r.block, value: r.value ?? null, time: doneAt }));
    else lines.push(JSON.stringify({ process: p, type: 'fail', f: 'read', block: r.block, time: doneAt }));
  });
  return lines.join('\n') + '\n';
}

/** Runs `raftblock check-history FILE --model block` on the history lines. */
export function checkBlockHistory(dir: string, history: string): { status: number | null; stdout: string; stderr: string } {
  const file = join(dir, 'history.jsonl');
  writeFileSync(file, history);
  const r = spawnSync(globalThis.process.execPath, [cliPath, 'check-history', file, '--model', 'block', '--timeout-ms', '60000'], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
