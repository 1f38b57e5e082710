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

/**
 * A temporary directory on a real disk (never tmpfs: tmpfs hides O_DIRECT alignment bugs).
 * Removed when the test ends.
 */
export function tempDir(t: TestContext, prefix = 'raftblock-test-'): string {
  const base = process.env.RAFTBLOCK_TEST_DIR ?? '/var/tmp';
  const dir = mkdtempSync(join(base, prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
