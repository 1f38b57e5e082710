import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time of a process tree, from /proc/PID/stat (utime + stime cover every thread of a
 * process). Children that already exited are not counted: benchmarks sample long-lived servers.
 */

let clockTicksPerS: number | undefined;

function clockTicks(): number {
  if (clockTicksPerS === undefined) {
    try {
      clockTicksPerS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicksPerS = 100;
    }
  }
  return clockTicksPerS;
}

interface ProcStat {
  pid: number;
  ppid: number;
  comm: string;
  cpuTicks: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited between listing and reading
  }
  // comm is in parentheses and may itself hold spaces or parentheses: split after the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime field 14, stime field 15.
  return { pid, ppid: Number(f[1]), comm, cpuTicks: Number(f[11]) + Number(f[12]) };
}

/** Every live process in the tree rooted at `rootPid`, the root included. */
export function processTree(rootPid: number): ProcStat[] {
  const all: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) all.push(st);
  }
  const byParent = new Map<number, ProcStat[]>();
  for (const st of all) {
    const list = byParent.get(st.ppid);
    if (list) list.push(st);
    else byParent.set(st.ppid, [st]);
  }
  const root = all.find((s) => s.pid === rootPid);
  if (!root) return [];
  const out: ProcStat[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const st = queue.pop()!;
    out.push(st);
    for (const child of byParent.get(st.pid) ?? []) queue.push(child);
  }
  return out;
}

/**
 * User + system CPU microseconds of the tree rooted at `rootPid`. With `commFilter`, only
 * processes whose name matches (e.g. /^node$/ for the node processes of a cluster).
 */
export function treeCpuUs(rootPid: number, commFilter?: RegExp): number {
  let ticks = 0;
  for (const st of processTree(rootPid)) {
    if (commFilter && !commFilter.test(st.comm)) continue;
    ticks += st.cpuTicks;
  }
  return (ticks * 1e6) / clockTicks();
}
