import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingFlags, nodeMallocTunables, nodeV8Flags, withNodeMallocTunables } from '../../src/cli/node-flags.js';

test('the raftblock command carries the storage nodes’ V8 flags and malloc tunables in its shebang', () => {
  const main = readFileSync(new URL('../../src/cli/main.js', import.meta.url), 'utf8');
  assert.equal(main.split('\n')[0], `#!/usr/bin/env -S GLIBC_TUNABLES=${nodeMallocTunables.join(':')}:\${GLIBC_TUNABLES} node ${nodeV8Flags.join(' ')}`);
  // Linux reads at most 255 bytes of a shebang line (BINPRM_BUF_SIZE less its "#!").
  assert.ok(main.split('\n')[0].length < 255);
});

test('the malloc tunables go in front of the caller’s own, which win (glibc takes the last)', () => {
  assert.equal(withNodeMallocTunables({}).GLIBC_TUNABLES, nodeMallocTunables.join(':'));
  assert.equal(withNodeMallocTunables({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0', HOME: '/h' }).GLIBC_TUNABLES, `${nodeMallocTunables.join(':')}:glibc.malloc.hugetlb=0`);
  assert.equal(withNodeMallocTunables({ HOME: '/h' }).HOME, '/h');
});

test('a node started through the shebang runs with the tunables, and the caller’s own after them', async () => {
  const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
  // A throwaway script with the same first line prints what the C library was handed.
  const dir = mkdtempSync(join(tmpdir(), 'raftblock-shebang-'));
  try {
    const script = join(dir, 'probe.cjs');
    writeFileSync(script, `${readFileSync(main, 'utf8').split('\n')[0]}\nconsole.log(JSON.stringify({ t: process.env.GLIBC_TUNABLES, v8: process.execArgv }));\n`);
    chmodSync(script, 0o755);
    const env = { ...process.env };
    delete env.GLIBC_TUNABLES;
    const plain = JSON.parse(execFileSync(script, { env, encoding: 'utf8' })) as { t: string; v8: string[] };
    assert.equal(plain.t, `${nodeMallocTunables.join(':')}:`);
    assert.deepEqual(plain.v8, [...nodeV8Flags]);
    const own = JSON.parse(execFileSync(script, { env: { ...env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, encoding: 'utf8' })) as { t: string };
    assert.equal(own.t, `${nodeMallocTunables.join(':')}:glibc.malloc.hugetlb=0`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('missingFlags keeps the flags the caller did not set, by name', () => {
  const flags = ['--initial-old-space-size=512', '--max-semi-space-size=8'];
  assert.deepEqual(missingFlags(flags, []), flags);
  assert.deepEqual(missingFlags(flags, ['--initial-old-space-size=64']), ['--max-semi-space-size=8']);
  assert.deepEqual(missingFlags(flags, ['--max-semi-space-size=32', '--initial-old-space-size=1024']), []);
  assert.deepEqual(missingFlags(flags, ['--perf-basic-prof']), flags);
});

test('this C library takes every malloc tunable a node is given', () => {
  // glibc ignores a tunable it does not know without a word: ask its loader what it took.
  const loader = { x64: '/lib64/ld-linux-x86-64.so.2', arm64: '/lib/ld-linux-aarch64.so.1' }[process.arch as 'x64' | 'arm64'];
  assert.ok(loader, `no known glibc loader for ${process.arch}`);
  const taken = execFileSync(loader, ['--list-tunables'], { env: withNodeMallocTunables({}), encoding: 'utf8' });
  for (const tunable of nodeMallocTunables) {
    const [name, value] = tunable.split('=');
    const line = taken.split('\n').find((l) => l.startsWith(`${name}:`));
    assert.ok(line, `${name} is no tunable of this C library`);
    assert.equal(Number(line.split(/[: ]+/)[1]), Number(value), line);
  }
});
