/**
 * The NBD server's memory budget (512 MiB) was fixed: `raftblock node --nbd-memory-budget`,
 * `raftblock export-file --memory-budget` and `raftblock start --nbd-memory-budget` (given to
 * every node it runs) set it, read as a size (`256M`, `2G`), and refuse what no one means (0, a
 * bare `512` that left out its unit, a fraction, past 1 TiB) before anything starts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { nodeArguments, type Layout } from '../../src/cli/commands/start.js';
import { runCli } from '../helpers/cli.js';
import { startExportFile } from '../helpers/nbd-server.js';
import { cliPath } from '../helpers/paths.js';
import { tempDir } from '../helpers/tools.js';

const budgetBytes = 3 * 1024 * 1024;

/** Values each of the flags refuses, with what it says. */
const nonsense: [string, RegExp][] = [
  ['0', /must be a size from 1M to 1T \(bytes, or with a K\/M\/G\/T suffix\), got "0"/],
  ['512', /must be a size from 1M to 1T/],
  ['2T', /must be a size from 1M to 1T/],
  ['1.5G', /must be a number of bytes with an optional K\/M\/G\/T\/P suffix, got "1\.5G"/],
  ['-1M', /must be a number of bytes/],
  ['lots', /must be a number of bytes/],
];

async function budgetMetric(http: string): Promise<number> {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  return Number(/^raftblock_nbd_memory_budget_bytes (\S+)$/m.exec(text)?.[1]);
}

test('export-file --memory-budget sets the budget the server keeps to', async (t) => {
  const dir = tempDir(t);
  const server = await startExportFile(t, { path: join(dir, 'disk.img'), exportName: 'disk', sizeBytes: 1 << 20, metrics: true, extraArgs: ['--memory-budget', '3M'] });
  assert.equal(await budgetMetric(server.metrics!), budgetBytes);
  assert.equal(await server.stop(), 0);
});

test('node --nbd-memory-budget sets the budget its NBD server keeps to', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  const node = spawn(process.execPath, [cliPath, 'node', '--id', '1', '--data', join(dir, 'node'), '--bootstrap', '--peer', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0', '--nbd-memory-budget', '3M'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = new Promise<number | null>((resolve) => node.once('exit', (code) => resolve(code)));
  t.after(() => node.kill('SIGKILL'));
  const http = await new Promise<string>((resolve, reject) => {
    createInterface({ input: node.stdout! }).on('line', (line) => {
      if (line.startsWith('{"event":"listening"')) resolve((JSON.parse(line) as { http: string }).http);
    });
    void exited.then((code) => reject(new Error(`the node exited (${code}) before listening`)));
  });
  assert.equal(await budgetMetric(http), budgetBytes);
  node.kill('SIGTERM');
  assert.equal(await exited, 0);
});

test('start gives --nbd-memory-budget to every node it runs, in bytes, and nothing without it', () => {
  const layout: Layout = { nodes: 3, host: '127.0.0.1', nbdPort: 10809, httpPort: 10900, peerPort: 11000 };
  for (let i = 0; i < layout.nodes; i++) {
    const args = nodeArguments(layout, i, `/d/node-${i + 1}`, '/d/cluster.key', { nbdMemoryBudgetBytes: budgetBytes });
    const at = args.indexOf('--nbd-memory-budget');
    assert.ok(at > 0, `node ${i + 1}: ${args.join(' ')}`);
    assert.equal(args[at + 1], String(budgetBytes));
    assert.ok(!nodeArguments(layout, i, `/d/node-${i + 1}`, '/d/cluster.key', {}).includes('--nbd-memory-budget'));
  }
});

test('export-file, node and start refuse a memory budget no one means, before anything starts', async (t) => {
  const dir = tempDir(t);
  for (const [value, message] of nonsense) {
    const runs: [string, string[], string][] = [
      ['export-file', ['export-file', join(dir, 'disk.img'), '--name', 'x', '--size', '1M', '--memory-budget', value], '--memory-budget'],
      ['node', ['node', '--id', '1', '--data', join(dir, 'node'), '--bootstrap', '--peer', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0', '--nbd-memory-budget', value], '--nbd-memory-budget'],
      ['start', ['start', '--data', join(dir, 'cluster'), '--nbd-memory-budget', value], '--nbd-memory-budget'],
    ];
    for (const [command, args, flag] of runs) {
      const r = await runCli(args, { timeoutMs: 20_000 });
      assert.equal(r.code, 2, `${command} ${flag} ${value}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${flag} ${message.source}`), `${command} ${flag} ${value}`);
      assert.doesNotMatch(r.stdout, /"event":"listening"/);
    }
  }
  assert.equal(existsSync(join(dir, 'disk.img')), false, 'export-file made its file');
  assert.equal(existsSync(join(dir, 'node')), false, 'node made its data dir');
  assert.equal(existsSync(join(dir, 'cluster')), false, 'start made its data dir');
});
