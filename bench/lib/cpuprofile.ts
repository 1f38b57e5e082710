import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * Summarises V8 `.cpuprofile` files (written by `node --cpu-prof`): the functions with the
 * most self time and the most inclusive time, so a benchmark run ends with its hot spots.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

interface FnStats {
  selfUs: number;
  totalUs: number;
}

function frameKey(n: ProfileNode): string {
  const f = n.callFrame;
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  // Keep paths short and stable: from the repository's dist/ or node: on.
  const url = f.url.replace(/^file:\/\/.*?\/dist\//, '').replace(/^file:\/\/.*\/node_modules\//, 'node_modules/');
  return `${name} ${url}:${f.lineNumber + 1}`;
}

export function summarizeProfile(profile: CpuProfile, top = 25): string {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const stats = new Map<string, FnStats>();
  const get = (k: string): FnStats => {
    let s = stats.get(k);
    if (!s) stats.set(k, (s = { selfUs: 0, totalUs: 0 }));
    return s;
  };
  let totalUs = 0;
  let idleUs = 0;
  const seen = new Set<string>();
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    const leaf = byId.get(profile.samples[i]);
    if (!leaf) continue;
    totalUs += dt;
    const leafKey = frameKey(leaf);
    if (leafKey.startsWith('(idle)')) {
      idleUs += dt;
      continue;
    }
    get(leafKey).selfUs += dt;
    // Inclusive time: every distinct function on the stack, once per sample (recursion-safe).
    seen.clear();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id)!);
      if (seen.has(k)) continue;
      seen.add(k);
      get(k).totalUs += dt;
    }
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number): string => ((100 * us) / Math.max(1, busyUs)).toFixed(1).padStart(5) + '%';
  const lines = [`busy ${(busyUs / 1e6).toFixed(2)} s of ${(totalUs / 1e6).toFixed(2)} s sampled`];
  lines.push('  self time (share of busy):');
  for (const [k, s] of [...stats].sort((a, b) => b[1].selfUs - a[1].selfUs).slice(0, top)) {
    lines.push(`    ${pct(s.selfUs)}  ${k}`);
  }
  lines.push('  inclusive time (share of busy), without the event loop roots:');
  const roots = /^\((root|program|garbage collector)\)|^processTicksAndRejections|^listOnTimeout|^processTimers/;
  for (const [k, s] of [...stats].filter(([k]) => !roots.test(k)).sort((a, b) => b[1].totalUs - a[1].totalUs).slice(0, top)) {
    lines.push(`    ${pct(s.totalUs)}  ${k}`);
  }
  return lines.join('\n');
}

/** Summaries of every `.cpuprofile` in `dir`, one block each. */
export function summarizeProfileDir(dir: string, top = 25): string {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  return files
    .map((f) => {
      const profile = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile;
      return `${basename(f)}: ${summarizeProfile(profile, top)}`;
    })
    .join('\n\n');
}
