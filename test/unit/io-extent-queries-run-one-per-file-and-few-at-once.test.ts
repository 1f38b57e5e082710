/**
 * Extent queries wait on a pool thread for as long as a punch of their file runs, so they are
 * rationed: one at a time per file (a second would wait behind the same lock, on a second
 * thread), at most extentQueriesMaxRunning in the process (libuv's pool also runs every fs
 * call), files that waited for a place going first; a file's close waits for its queries.
 * Driven through an addon whose extentMap answers when the test says.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IoError } from '../../src/common/errors.js';
import { ExtentQueries, extentQueriesMaxRunning, loadNative, type NativeAddon } from '../../src/io/native.js';

interface Call {
  fd: number;
  start: number;
  resolve: (runs: Float64Array) => void;
  reject: (err: unknown) => void;
}

function controlledAddon(): { addon: NativeAddon; calls: Call[] } {
  const real = loadNative();
  const calls: Call[] = [];
  const addon = {
    ...('addon' in real ? real.addon : {}),
    extentMap: (fd: number, start: number) =>
      new Promise<Float64Array>((resolve, reject) => {
        calls.push({ fd, start, resolve, reject });
      }),
  } as NativeAddon;
  return { addon, calls };
}

/** Lets every settled promise's reactions run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

test('extent queries run one per file, at most extentQueriesMaxRunning at once, waiting files first', async () => {
  assert.equal(extentQueriesMaxRunning, 2);
  const { addon, calls } = controlledAddon();
  const a = new ExtentQueries(addon, 10, '/a');
  const b = new ExtentQueries(addon, 11, '/b');
  const c = new ExtentQueries(addon, 12, '/c');
  const answers: string[] = [];
  const ask = (q: ExtentQueries, name: string, start: number): Promise<void> =>
    q.map(start, start + 4096, 4).then(
      (runs) => void answers.push(`${name}${start}:${runs[1]}`),
      (err: unknown) => void answers.push(`${name}${start}:${(err as IoError).code}/${(err as IoError).errno}`),
    );
  const all = [ask(a, 'a', 0), ask(a, 'a', 4096), ask(b, 'b', 0), ask(c, 'c', 0)];
  let aDrained = false;
  void a.drained().then(() => (aDrained = true));
  await settle();
  assert.deepEqual(calls.map((x) => [x.fd, x.start]), [[10, 0], [11, 0]], "a's second waits for its first, c for a place");

  calls[0].resolve(Float64Array.of(0, 4096, 0));
  await settle();
  assert.deepEqual(calls.map((x) => [x.fd, x.start]), [[10, 0], [11, 0], [12, 0]], 'c waited for a place: it goes before a again');

  calls[1].reject(Object.assign(new Error('lseek failed: Input/output error'), { errno: 5, syscall: 'lseek' }));
  await settle();
  assert.deepEqual(calls.map((x) => [x.fd, x.start]), [[10, 0], [11, 0], [12, 0], [10, 4096]]);
  assert.equal(aDrained, false, 'a query of a is still running');

  calls[2].resolve(Float64Array.of(0, 4096, 1));
  calls[3].resolve(Float64Array.of(4096, 8192, 2));
  await Promise.all(all);
  await settle();
  assert.equal(aDrained, true);
  assert.deepEqual(answers, ['a0:4096', 'b0:IO_ERROR/5', 'c0:4096', 'a4096:8192']);
  await a.drained(); // and at once when idle
});
