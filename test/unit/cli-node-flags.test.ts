import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { missingFlags, nodeV8Flags } from '../../src/cli/node-flags.js';

test('the raftblock command carries the storage nodes’ V8 flags in its shebang', () => {
  const main = readFileSync(new URL('../../src/cli/main.js', import.meta.url), 'utf8');
  assert.equal(main.split('\n')[0], `#!/usr/bin/env -S node ${nodeV8Flags.join(' ')}`);
});

test('missingFlags keeps the flags the caller did not set, by name', () => {
  const flags = ['--initial-old-space-size=512', '--max-semi-space-size=8'];
  assert.deepEqual(missingFlags(flags, []), flags);
  assert.deepEqual(missingFlags(flags, ['--initial-old-space-size=64']), ['--max-semi-space-size=8']);
  assert.deepEqual(missingFlags(flags, ['--max-semi-space-size=32', '--initial-old-space-size=1024']), []);
  assert.deepEqual(missingFlags(flags, ['--perf-basic-prof']), flags);
});
