import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, ftruncateSync } from 'node:fs';
import { createServer } from 'node:net';
import type { TestContext } from 'node:test';
import { cliPath } from './paths.js';
import './vm/sbin-path.js';

/**
 * Starts real NBD server processes for interop tests and runs client tools against them.
 *
 * The server is `raftblock export-file`. For comparing behaviour with a reference server,
 * RAFTBLOCK_INTEROP_SERVER=nbdkit runs nbdkit's file plugin on the same file instead (never in
 * CI: the tests exist to prove raftblock).
 */

export interface ExportFileOptions {
  /** The file to serve; created sparse with `sizeBytes` when absent. */
  path: string;
  exportName: string;
  sizeBytes?: number;
  readOnly?: boolean;
  /** Also serve /metrics on an ephemeral loopback port. */
  metrics?: boolean;
  /** How long to wait for the listening line. */
  startTimeoutMs?: number;
  /** Require TLS with the keys of this PSK file (`--tls-psk`). */
  tlsPskFile?: string;
  /** More flags of `raftblock export-file` (not passed to nbdkit). */
  extraArgs?: string[];
}

export interface ExportFileServer {
  host: string;
  port: number;
  exportName: string;
  /** nbd://HOST:PORT/NAME */
  uri: string;
  /** HOST:PORT of the metrics server, when asked for. */
  metrics: string | undefined;
  proc: ChildProcess;
  /** Everything the process wrote to stderr so far (its structured log). */
  stderr(): string;
  /** SIGTERM, then waits for exit; returns the exit code (null when killed by a signal). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL (a crash), then waits for the process to be gone. */
  kill9(): Promise<void>;
}

const defaultStartTimeoutMs = 20_000;
const defaultStopTimeoutMs = 10_000;

function waitExit(proc: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      proc.off('exit', onExit);
      resolve(undefined);
    }, timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      resolve({ code, signal });
    };
    proc.once('exit', onExit);
  });
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
}

/**
 * Spawns `raftblock export-file` and resolves once it printed its listening line
 * `{"event":"listening","nbd":"HOST:PORT","metrics":"HOST:PORT"}`. The process is killed when
 * the test ends (if the test did not stop it itself).
 */
export async function startExportFile(t: TestContext, opts: ExportFileOptions): Promise<ExportFileServer> {
  const useNbdkit = process.env.RAFTBLOCK_INTEROP_SERVER === 'nbdkit' && process.env.CI !== 'true';
  let proc: ChildProcess;
  let knownPort = 0;
  if (useNbdkit) {
    if (!existsSync(opts.path)) {
      const fd = openSync(opts.path, 'w');
      ftruncateSync(fd, opts.sizeBytes ?? 0);
      closeSync(fd);
    }
    knownPort = await freeLoopbackPort();
    const args = ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(knownPort), '--filter=exportname'];
    if (opts.readOnly) args.push('-r');
    args.push('file', opts.path, `exportname=${opts.exportName}`, 'exportname-list=explicit');
    proc = spawn('nbdkit', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    const args = [cliPath, 'export-file', opts.path, '--name', opts.exportName, '--listen', '127.0.0.1:0'];
    if (opts.sizeBytes !== undefined) args.push('--size', String(opts.sizeBytes));
    if (opts.readOnly) args.push('--readonly');
    if (opts.metrics) args.push('--metrics', '127.0.0.1:0');
    if (opts.tlsPskFile) args.push('--tls-psk', opts.tlsPskFile);
    if (opts.extraArgs) args.push(...opts.extraArgs);
    proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  let stderrText = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => {
    // Bounded: a chatty server must not grow test memory without limit.
    stderrText = (stderrText + d).slice(-256 * 1024);
  });

  let killed = false;
  const kill = async (signal: NodeJS.Signals, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const r = await waitExit(proc, timeoutMs);
    if (r === undefined) {
      proc.kill('SIGKILL');
      await waitExit(proc, 5_000);
    }
    killed = true;
    return r;
  };
  t.after(async () => {
    if (!killed) await kill('SIGTERM', defaultStopTimeoutMs);
  });

  const listening = await new Promise<{ nbd: string; metrics?: string | null }>((resolve, reject) => {
    const timeoutMs = opts.startTimeoutMs ?? defaultStartTimeoutMs;
    let out = '';
    const timer = setTimeout(() => finish(new Error(`server did not report listening within ${timeoutMs} ms; stderr:\n${stderrText}`)), timeoutMs);
    const onData = (d: string): void => {
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl).trim();
        out = out.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        try {
          const ev = JSON.parse(line) as { event?: string; nbd?: string; metrics?: string | null };
          if (ev.event === 'listening' && typeof ev.nbd === 'string') finish(undefined, { nbd: ev.nbd, metrics: ev.metrics });
        } catch {
          // not the listening line
        }
      }
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new Error(`server exited (code ${code}, signal ${signal}) before listening; stderr:\n${stderrText}`));
    const finish = (err: Error | undefined, v?: { nbd: string; metrics?: string | null }): void => {
      clearTimeout(timer);
      proc.stdout!.off('data', onData);
      proc.off('exit', onExit);
      if (err) reject(err);
      else resolve(v!);
    };
    proc.stdout!.setEncoding('utf8');
    if (useNbdkit) {
      // nbdkit prints nothing; probe the port until it accepts.
      const probe = async (): Promise<void> => {
        const { connect } = await import('node:net');
        for (;;) {
          if (proc.exitCode !== null) return;
          const ok = await new Promise<boolean>((r) => {
            const s = connect(knownPort, '127.0.0.1');
            s.once('connect', () => { s.destroy(); r(true); });
            s.once('error', () => r(false));
          });
          if (ok) return finish(undefined, { nbd: `127.0.0.1:${knownPort}` });
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      void probe();
    }
    proc.stdout!.on('data', onData);
    proc.once('exit', onExit);
  });
  // Keep draining stdout so the child never blocks on a full pipe.
  proc.stdout!.resume();

  const { host, port } = splitHostPort(listening.nbd);
  return {
    host,
    port,
    exportName: opts.exportName,
    uri: `nbd://${host}:${port}/${opts.exportName}`,
    metrics: listening.metrics ?? undefined,
    proc,
    stderr: () => stderrText,
    stop: async (timeoutMs = defaultStopTimeoutMs) => {
      const r = await kill('SIGTERM', timeoutMs);
      if (r === undefined) throw new Error(`server did not exit within ${timeoutMs} ms of SIGTERM`);
      return r.code;
    },
    kill9: async () => {
      await kill('SIGKILL', 5_000);
    },
  };
}

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

export interface RunToolOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with each complete stdout line as it arrives. */
  onLine?: (line: string) => void;
}

/**
 * Runs a client tool to completion (killing it after `timeoutMs`) and collects its output.
 * Never throws for a non-zero exit: callers assert on `code` with the output in the message.
 */
export function runTool(cmd: string, args: string[], opts: RunToolOptions = {}): Promise<ToolResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      cwd: opts.cwd,
      env: opts.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    proc.stdout!.setEncoding('utf8');
    proc.stderr!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      stdout += d;
      if (opts.onLine) {
        partial += d;
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          opts.onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      }
    });
    proc.stderr!.on('data', (d: string) => { stderr += d; });
    const timeoutMs = opts.timeoutMs ?? 120_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[killed after ${timeoutMs} ms]`;
      resolve({ code, signal, stdout, stderr, elapsedMs: Date.now() - started });
    });
    if (opts.input !== undefined) proc.stdin!.end(opts.input);
  });
}

/** A one-line description of a tool run for assertion messages. */
export function describeRun(cmd: string, r: ToolResult): string {
  const tail = (s: string): string => (s.length > 4000 ? '…' + s.slice(-4000) : s);
  return `${cmd} exited ${r.code ?? r.signal} after ${r.elapsedMs} ms\nstdout:\n${tail(r.stdout)}\nstderr:\n${tail(r.stderr)}`;
}

/** Runs a tool and fails the test unless it exits 0. */
export async function runToolOk(cmd: string, args: string[], opts: RunToolOptions = {}): Promise<ToolResult> {
  const r = await runTool(cmd, args, opts);
  if (r.code !== 0) throw new Error(describeRun(`${cmd} ${args.join(' ')}`, r));
  return r;
}
