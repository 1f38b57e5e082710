import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/..., three levels below it). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The compiled CLI entry point. */
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/**
 * Shared read-only test data: `$RAFTBLOCK_TESTDATA` if set, else `shared/testdata` beside the
 * repository, else beside the local repository this checkout was cloned from (a fresh clone
 * made elsewhere, e.g. under /tmp, still finds it). When none exists the first candidate is
 * returned and the tests that read it fail on the missing files.
 */
function findSharedTestdata(): string {
  const beside = (dir: string): string => join(dir, '..', 'shared', 'testdata');
  const candidates: string[] = [];
  if (process.env.RAFTBLOCK_TESTDATA) candidates.push(process.env.RAFTBLOCK_TESTDATA);
  candidates.push(beside(repoRoot));
  try {
    const origin = execFileSync('git', ['-C', repoRoot, 'config', '--get', 'remote.origin.url'], { encoding: 'utf8' }).trim();
    if (isAbsolute(origin)) candidates.push(beside(origin));
  } catch {
    // not a git checkout, or no origin: only the other candidates
  }
  return candidates.find((c) => existsSync(c)) ?? candidates[0];
}

export const sharedTestdata = findSharedTestdata();
