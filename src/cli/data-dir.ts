/**
 * A --data directory, made if absent. A path that is a file, or under one, or that cannot be
 * made, is the operator's mistake: said so naming the flag, not by a Node stack trace from
 * deep in the command.
 */
import { mkdirSync } from 'node:fs';
import { InvalidArgument } from '../common/errors.js';

export function makeDataDir(dir: string, flag = '--data'): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new InvalidArgument(`${flag} ${dir} is not a directory`);
    if (code === 'ENOTDIR') throw new InvalidArgument(`${flag} ${dir} cannot be a directory: a part of its path is a file`);
    throw new InvalidArgument(`${flag} ${dir}: cannot make the directory: ${(err as Error).message}`);
  }
}
