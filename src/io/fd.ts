import * as fs from 'node:fs';
import { toIoError } from './check.js';

/**
 * File-descriptor calls that both BlockIo backends make the same way (through libuv's pool):
 * they are rare (open, resize, close), so neither backend needs its own path for them.
 */
export function fdSize(fd: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.fstat(fd, (err, st) => (err ? reject(toIoError(err, 'fstat', path)) : resolve(st.size)));
  });
}

export function fdTruncate(fd: number, sizeBytes: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.ftruncate(fd, sizeBytes, (err) => (err ? reject(toIoError(err, 'ftruncate', path)) : resolve()));
  });
}

export function fdClose(fd: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.close(fd, (err) => (err ? reject(toIoError(err, 'close', path)) : resolve()));
  });
}
