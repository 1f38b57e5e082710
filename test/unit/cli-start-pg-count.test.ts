import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultPgCount } from '../../src/cli/commands/start.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

test('pool default gets about four PG replicas per node, a power of two, at least 4', () => {
  assert.equal(defaultPgCount(1, 1), 4);
  assert.equal(defaultPgCount(2, 2), 4);
  assert.equal(defaultPgCount(3, 3), 4);
  assert.equal(defaultPgCount(5, 3), 8);
  assert.equal(defaultPgCount(12, 3), 16);
  assert.equal(defaultPgCount(64, 3), 128);
  for (let nodes = 1; nodes <= 64; nodes++) {
    const replicas = Math.min(3, nodes);
    const n = defaultPgCount(nodes, replicas);
    assert.equal(n & (n - 1), 0, `${n} is a power of two`);
    assert.ok((n * replicas) / nodes >= 4 && (n * replicas) / nodes < 8 + 4, `${n} PGs for ${nodes} nodes`);
  }
});

test('raftblock start refuses a bad --pg-count before it starts anything', () => {
  const dir = mkdtempSync(join('/var/tmp', 'raftblock-start-'));
  try {
    for (const bad of ['0', '-3', '2.5', 'many', '70000']) {
      const r = spawnSync(process.execPath, [cli, 'start', '--data', join(dir, bad), '--pg-count', bad], { encoding: 'utf8', timeout: 30_000 });
      assert.notEqual(r.status, 0, `--pg-count ${bad} was accepted`);
      assert.match(r.stderr, /--pg-count must be a whole number in 1\.\.65536/);
      assert.equal(existsSync(join(dir, bad, 'node-1')), false, 'no node was started');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
