// Runs the compiled test files under dist/test with Node's test runner.
// Usage: node scripts/run-tests.mjs [subdir ...]   (default: every subdir of test/)
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const base = join(root, 'dist', 'test');
const dirs = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'interop', 'cluster'];
const files = [];
function walk(dir) {
  let names;
  try { names = readdirSync(dir); } catch { return; }
  for (const n of names.sort()) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith('.test.js')) files.push(p);
  }
}
for (const d of dirs) walk(join(base, d));
if (files.length === 0) { console.error('no test files found'); process.exit(1); }
// A test that hangs fails after 10 minutes (the longest takes about one) instead of holding
// the run until CI's own limit; a test may set a longer timeout of its own.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=600000', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
