import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BenchOptions } from './args.js';
import { prefill, runFioProfile, type FioProfile } from './fio.js';
import { treeCpuUs } from './cpu.js';
import { diskOf, diskPerOp, readDisk } from './disk.js';
import { summarizeProfileDir } from './cpuprofile.js';
import type { RunningServer, ServerSpec } from './peers.js';
import { formatTable, medianByIops, type BenchRow, type RowNotes, type Target } from './table.js';

export interface SuiteConfig {
  title: string;
  /** The server the ratios are computed for. */
  subject: string;
  servers: readonly ServerSpec[];
  profiles: readonly FioProfile[];
  targets: readonly Target[];
  /** Keep serverCpuUsPerOp in the JSON rows (the cluster benchmark's contract). */
  cpuInJson: boolean;
  /** Servers whose export size the suite adopts (e.g. a cluster volume of fixed size). */
  sizeFrom?: (started: RunningServer) => number | undefined;
}

/** How long each idle server's background CPU is sampled before the runs. */
const idleSampleMs = 2000;

const log = (msg: string): void => {
  process.stderr.write(`[bench] ${msg}\n`);
};

/**
 * Starts every server, prefills each export, then runs every profile on every server,
 * interleaved (profile by profile, the server order rotated each repeat) so that load from
 * other work on the machine spreads over all servers instead of favouring one. Servers stay up
 * for the whole suite, idle while another is measured.
 */
export async function runSuite(cfg: SuiteConfig, opts: BenchOptions): Promise<BenchRow[]> {
  const runDir = mkdtempSync(join(opts.dir, 'raftblock-bench-'));
  const started: Array<{ spec: ServerSpec; srv: RunningServer }> = [];
  const stopAll = async (): Promise<void> => {
    for (const { srv } of started.splice(0)) {
      try {
        await srv.stop();
      } catch (e) {
        log(`stopping ${srv.name}: ${(e as Error).message}`);
      }
    }
    if (opts.keep) log(`kept ${runDir}`);
    else rmSync(runDir, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    log('interrupted: stopping servers');
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const specs = cfg.servers.filter((s) => (opts.servers.length === 0 ? !s.onRequest : opts.servers.includes(s.name)));
    const profiles = cfg.profiles.filter((p) => opts.profiles.length === 0 || opts.profiles.includes(p.name));
    if (specs.length === 0 || profiles.length === 0) throw new Error('no server or no profile selected');
    const cores = cpus().length;
    // Every server's files are under runDir: this disk serves them all (fio's own I/O is over NBD).
    const disk = diskOf(runDir);
    log(`${cfg.title}: ${specs.length} servers × ${profiles.length} profiles × ${opts.repeat} runs of ${opts.runtimeS} s; ` +
      `${cores} cores, load ${fmtLoad()}; files in ${runDir} (disk ${disk ?? 'none: no device columns'})`);

    let sizeBytes = opts.sizeBytes;
    for (const spec of specs) {
      const ctx = { dir: join(runDir, spec.name), sizeBytes, cpuProfDir: opts.cpuProfDir, cliPath: opts.cliPath };
      try {
        log(`starting ${spec.name}`);
        const srv = await spec.start(ctx);
        started.push({ spec, srv });
        const adopted = cfg.sizeFrom?.(srv);
        if (adopted !== undefined && adopted !== sizeBytes) {
          log(`${spec.name} serves ${adopted} bytes: every other export uses that size`);
          sizeBytes = adopted;
        }
      } catch (e) {
        log(`SKIPPED ${spec.name}: could not start: ${(e as Error).message.trim()}`);
      }
    }
    for (const entry of opts.prefill ? [...started] : []) {
      const { srv } = entry;
      const t0 = Date.now();
      try {
        await prefillWithRetry(srv, sizeBytes);
        log(`prefilled ${srv.name} (${sizeBytes} bytes) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (e) {
        log(`SKIPPED ${srv.name}: prefill failed: ${(e as Error).message.trim()}`);
        started.splice(started.indexOf(entry), 1);
        await srv.stop();
      }
    }

    // Background CPU (timers, heartbeats) of each idle server, so the per-request CPU of the
    // slow profiles (QD1) can be read net of it.
    const idleCpuPct = new Map<string, number>();
    for (const { srv } of started) {
      const c0 = treeCpuUs(srv.pid, srv.cpuComm);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, idleSampleMs));
      idleCpuPct.set(srv.name, (100 * (treeCpuUs(srv.pid, srv.cpuComm) - c0)) / ((performance.now() - t0) * 1000));
    }

    const runs = new Map<string, Array<{ row: BenchRow; notes: RowNotes }>>();
    for (let rep = 0; rep < opts.repeat; rep++) {
      for (const profile of profiles) {
        for (let i = 0; i < started.length; i++) {
          const { srv } = started[(i + rep) % started.length];
          let res;
          let cpu0 = 0;
          let disk0;
          try {
            // Unmeasured first: the same profile warms the server's path (a JIT compiles what
            // runs hot; a cluster's leaders settle where this client's requests go), for every
            // server alike, so that the measured run sees its steady state, not its start.
            if (opts.warmupS > 0) await runFioProfile(srv.uri, profile, opts.warmupS, sizeBytes);
            cpu0 = treeCpuUs(srv.pid, srv.cpuComm);
            disk0 = disk === undefined ? undefined : readDisk(disk);
            res = await runFioProfile(srv.uri, profile, opts.runtimeS, sizeBytes);
          } catch (e) {
            log(`FAILED ${srv.name} ${profile.name}: ${(e as Error).message.trim()}`);
            continue;
          }
          const cpuUs = treeCpuUs(srv.pid, srv.cpuComm) - cpu0;
          const row: BenchRow = {
            server: srv.name,
            profile: profile.name,
            iops: round(res.iops, 1),
            mibps: round(res.mibps, 2),
            p50Us: round(res.p50Us, 1),
            p99Us: round(res.p99Us, 1),
            serverCpuUsPerOp: res.ios > 0 ? round(cpuUs / res.ios, 2) : undefined,
          };
          const disk1 = disk === undefined ? undefined : readDisk(disk);
          const notes = { load1: loadavg()[0], disk: disk0 && disk1 ? diskPerOp(disk0, disk1, res.ios) : undefined };
          log(`${srv.name} ${profile.name}: ${row.iops.toFixed(0)} IOPS ${row.mibps.toFixed(1)} MiB/s ` +
            `p50 ${row.p50Us} µs p99 ${row.p99Us} µs cpu ${row.serverCpuUsPerOp ?? '-'} µs/op load ${fmtLoad()}`);
          const key = `${srv.name}\u0000${profile.name}`;
          const list = runs.get(key);
          if (list) list.push({ row, notes });
          else runs.set(key, [{ row, notes }]);
        }
      }
    }

    // Rows in a stable order: profile, then server as configured.
    const rows: BenchRow[] = [];
    const notes = new Map<BenchRow, RowNotes>();
    for (const profile of profiles) {
      for (const { srv } of started) {
        const list = runs.get(`${srv.name}\u0000${profile.name}`);
        if (!list) continue;
        const med = medianByIops(list.map((x) => ({ ...x, iops: x.row.iops })));
        rows.push(med.row);
        notes.set(med.row, med.notes);
      }
    }

    const names = new Set(started.map((s) => s.spec.name));
    process.stdout.write(`\n${cfg.title} — ${opts.runtimeS} s per run, ${opts.repeat} run(s) each (median by IOPS), ` +
      `export ${sizeBytes} bytes, load average at end ${fmtLoad()}\n\n`);
    process.stdout.write(formatTable(rows, notes, cfg.subject, cfg.targets) + '\n\n');
    for (const spec of specs) {
      if (!names.has(spec.name)) continue;
      const idle = idleCpuPct.get(spec.name);
      process.stdout.write(`  ${spec.name}: ${spec.durability}; idle CPU ${idle === undefined ? '-' : idle.toFixed(1) + '%'} of a core\n`);
    }
    process.stdout.write('  CPU µs/op: user+system CPU of the server\'s processes during the run ÷ requests completed (idle CPU included).\n');
    process.stdout.write('  fio sends no FLUSH in these profiles unless the name says flushN (a FLUSH every N writes).\n');
    if (disk !== undefined) {
      process.stdout.write(`  device ${disk} per request: writes / flushes / KiB written that /proc/diskstats counted during the run ÷ requests ` +
        '(the whole disk: anything else writing to it counts too); µs: mean issue-to-completion time of a device write / flush.\n');
    }

    const jsonRows = rows.map((r) => {
      if (cfg.cpuInJson) return r;
      const { serverCpuUsPerOp: _omit, ...rest } = r;
      return rest;
    });
    if (opts.out) {
      writeFileSync(opts.out, JSON.stringify(jsonRows, null, 2) + '\n');
      log(`wrote ${opts.out}`);
    }
    return rows;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAll();
    if (opts.cpuProfDir) {
      // The profiles are written when the node processes exit, i.e. by stopAll above.
      try {
        process.stdout.write(`\nCPU profiles in ${opts.cpuProfDir}:\n${summarizeProfileDir(opts.cpuProfDir)}\n`);
      } catch (e) {
        log(`could not summarise CPU profiles: ${(e as Error).message}`);
      }
    }
  }
}

/**
 * A server may answer the handshake before it can take writes (a cluster electing its
 * leaders): the prefill is retried a few times before the server is given up.
 */
async function prefillWithRetry(srv: RunningServer, sizeBytes: number): Promise<void> {
  const attempts = 3;
  for (let i = 1; ; i++) {
    try {
      await prefill(srv.uri, sizeBytes);
      return;
    } catch (e) {
      if (i >= attempts) throw e;
      log(`prefill of ${srv.name} failed (attempt ${i}/${attempts}), retrying in 5 s: ${(e as Error).message.trim().slice(0, 300)}`);
      await new Promise((r) => setTimeout(r, 5000));
    }
  }
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function fmtLoad(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}
