/**
 * Helpers for the `raftblock start` tests: run it in a temp dir on free ports, wait for its
 * ready line, follow its node events, stop it.
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { freePortRange } from '../../src/common/ports.js';
import { createInterface } from 'node:readline';
import { cliPath } from '../helpers/paths.js';

export interface Ready {
  nbd: string[];
  http: string[];
  pids: number[];
}

export interface Cluster {
  proc: ChildProcess;
  ready: Ready;
  events: Record<string, unknown>[];
  /** Every line it printed to stdout, JSON or not (the connect instructions). */
  lines: string[];
}

/** A base port with `count` consecutive free ports after it, for each of nbd, http, peer. */
export const freeBase = (count: number): Promise<number> => freePortRange(count);

/** `raftblock start` on `dir` with three nodes; `extraArgs` go to it after the ports. */
export function startCluster(t: TestContext, dir: string, ports: { nbd: number; http: number; peer: number }, extraArgs: string[] = [], timeoutMs = 90_000): Promise<Cluster> {
  const proc = spawn(
    process.execPath,
    [cliPath, 'start', '--data', dir, '--nodes', '3', '--nbd-port', String(ports.nbd), '--http-port', String(ports.http), '--peer-port', String(ports.peer), ...extraArgs],
    // Info, not warn: the nodes' files then record snapshot installs, restores and repairs,
    // which a failed verify pass reports (start-local-cluster's clusterEvidence).
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RAFTBLOCK_LOG: 'info' } },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const events: Record<string, unknown>[] = [];
  const lines: string[] = [];
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
      lines.push(line);
      if (!line.startsWith('{')) return;
      const e = JSON.parse(line) as Record<string, unknown>;
      events.push(e);
      if (e.event === 'ready') {
        clearTimeout(timer);
        resolve({ proc, ready: e as unknown as Ready, events, lines });
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`raftblock start exited with ${code}: ${stderr}`));
    });
  });
}

/** The node pids now (restarted nodes have new ones). */
export function currentPids(c: Cluster): number[] {
  const pids = [...c.ready.pids];
  for (const e of c.events) if (e.event === 'node-restarted') pids[(e.id as number) - 1] = e.pid as number;
  return pids;
}

export async function stopCluster(c: Cluster): Promise<void> {
  const exited = new Promise<number | null>((r) => c.proc.once('exit', (code) => r(code)));
  c.proc.kill('SIGINT');
  assert.equal(await exited, 0, 'raftblock start exits 0 after SIGINT');
  for (const pid of currentPids(c)) assert.throws(() => process.kill(pid, 0), 'every node process is gone');
}

