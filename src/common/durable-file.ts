import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Writes a small file so that after a crash it is either the old or the new content. */
export async function writeFileDurably(path: string, content: string | Uint8Array): Promise<void> {
  const tmp = path + '.tmp';
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** The content of the file at `path`, or undefined if there is none (other errors are thrown). */
export async function readFileIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
