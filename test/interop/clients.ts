import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/paths.js';

/**
 * The system Python, which is the one python3-libnbd installs `import nbd` for (a python3
 * earlier on PATH, e.g. from a version manager, usually lacks it).
 */
export const python3WithNbd = '/usr/bin/python3';

/** Python scripts the interop tests run (kept as source: tsc does not copy them). */
export function pyScript(name: string): string {
  return join(repoRoot, 'test', 'interop', 'py', name);
}

/** Creates a sparse file of `sizeBytes` (a read-only export needs an existing file). */
export function sparseFile(path: string, sizeBytes: number): string {
  const fd = openSync(path, 'wx');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
  return path;
}
