import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** True when `name` is on PATH. */
export function haveTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Requires external tools. Under CI=true a missing tool fails the test (CI must install it);
 * elsewhere the test is skipped with a message saying what to install.
 */
export function requireTools(t: TestContext, ...names: string[]): boolean {
  const missing = names.filter((n) => !haveTool(n));
  return requireCapability(t, missing.length === 0, `missing tools: ${missing.join(', ')} (bash scripts/install-deps.sh installs them)`);
}

/**
 * Requires something the machine must provide (root, a Python module, ...). Under CI=true its
 * absence fails the test; elsewhere the test is skipped with `missing` as the reason.
 */
export function requireCapability(t: TestContext, available: boolean, missing: string): boolean {
  if (available) return true;
  if (process.env.CI === 'true') throw new Error(missing);
  t.skip(missing);
  return false;
}

/** Directories tempDir made in this process, removed when it exits. */
const tempDirs: string[] = [];
let removeAtExit = false;

/**
 * A temporary directory on a real disk (never tmpfs: tmpfs hides O_DIRECT alignment bugs).
 * Removed when the test file's process exits, not in a `t.after` hook: hooks run in the order
 * they were registered, so a directory made before the nodes, hosts or WALs that use it would
 * be removed before they stop, and their last writes (a final checkpoint) would fail.
 */
export function tempDir(_t: TestContext, prefix = 'raftblock-test-'): string {
  const base = process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp';
  const dir = mkdtempSync(join(base, prefix));
  tempDirs.push(dir);
  if (!removeAtExit) {
    removeAtExit = true;
    process.once('exit', () => {
      for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}
