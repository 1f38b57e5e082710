import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostPort, parseSize } from '../../src/common/address.js';
import { InvalidArgument, RaftblockError } from '../../src/common/errors.js';

test('parseHostPort accepts host:port and [v6]:port', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
  assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseHostPort(':80'), { host: '0.0.0.0', port: 80 });
});

test('parseHostPort rejects malformed input with a typed error', () => {
  for (const bad of ['', 'host', 'host:', 'host:99999', 'a:b:c']) {
    assert.throws(() => parseHostPort(bad), (e: unknown) => e instanceof InvalidArgument && (e as RaftblockError).code === 'INVALID_ARGUMENT');
  }
});

test('parseSize understands binary suffixes', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('1G'), 1 << 30);
  assert.equal(parseSize('64MiB'), 64 << 20);
  assert.equal(parseSize('10g'), 10 * 2 ** 30);
  assert.throws(() => parseSize('1.5G'), InvalidArgument);
  assert.throws(() => parseSize('-1'), InvalidArgument);
});
