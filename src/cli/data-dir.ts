/**
 * A --data directory, made if absent. A path that is a file, or under one, or that cannot be
 * made, is the operator's mistake: said so naming the flag, not by a Node stack trace from
 * deep in the command.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidArgument } from '../common/errors.js';

export function makeDataDir(dir: string, flag = '--data'): void {
  // Made one level at a time, not with mkdirSync's `recursive`: where mkdir fails with ENOENT
  // though the parent exists (under /proc or /sys), Node 20's recursive mkdir makes the parent
  // again, finds it there, and retries the child forever, so the command would hang at 100 %
  // CPU instead of saying why.
  const missing: string[] = [];
  for (let at = resolve(dir); ; at = dirname(at)) {
    const kind = kindOf(at);
    if (kind === 'directory') break;
    if (kind === 'other') {
      if (missing.length === 0) throw new InvalidArgument(`${flag} ${dir} is not a directory`);
      throw new InvalidArgument(`${flag} ${dir} cannot be a directory: a part of its path is a file`);
    }
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Made meanwhile by another process: fine if it is a directory.
      if (code === 'EEXIST' && kindOf(path) === 'directory') continue;
      if (code === 'EEXIST') throw new InvalidArgument(`${flag} ${dir} is not a directory`);
      if (code === 'ENOTDIR') throw new InvalidArgument(`${flag} ${dir} cannot be a directory: a part of its path is a file`);
      throw new InvalidArgument(`${flag} ${dir}: cannot make the directory: ${(err as Error).message}`);
    }
  }
}

/** What `path` is, following symbolic links: absent (a dangling link counts so), a directory, or something else. */
function kindOf(path: string): 'absent' | 'directory' | 'other' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'other';
  } catch {
    // Absent, under a file (ENOTDIR: the walk up finds the file) or not to be looked at (the
    // mkdir says why).
    return 'absent';
  }
}
