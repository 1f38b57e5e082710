/**
 * Secrets kept in files (the cluster key, the admin token, TLS keys and certificates): read
 * whole, less trailing line ends, so a secret written as text with `echo` matches the same
 * text written without a newline. Errors name the file and what it was for, never its content.
 */
import { readFileSync } from 'node:fs';
import { InvalidArgument } from './errors.js';

/** The bytes of `path` less trailing CR/LF; refused below `minBytes` (a typo, an empty file). */
export function readSecretFile(path: string, kind: string, minBytes: number): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new InvalidArgument(`cannot read the ${kind} file ${path}: ${(err as Error).message}`);
  }
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
  const article = /^[aeiou]/.test(kind) ? 'an' : 'a';
  if (end < minBytes) throw new InvalidArgument(`${path} holds ${end} bytes; ${article} ${kind} needs at least ${minBytes}`);
  return bytes.subarray(0, end);
}
