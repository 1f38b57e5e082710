import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireTools, tempDir } from '../helpers/tools.js';
import { runKernelNbdClientVm, vmHostTools } from '../helpers/vm.js';
import { freeBase, startCluster, stopCluster } from './start-cluster.js';

test('raftblock start: the Linux kernel NBD client in a VM (2 connections) makes, fills, remounts and fscks ext4 on vol0', async (t) => {
  if (!requireTools(t, ...vmHostTools)) return;
  const dir = tempDir(t, 'raftblock-start-vm-');
  const cluster = await startCluster(t, dir, { nbd: await freeBase(3), http: await freeBase(3), peer: await freeBase(3) });
  // Through node 1's gateway: PGs led by the other nodes are reached by forwarding.
  const port = Number(cluster.ready.nbd[1].split(':')[1]);
  const r = await runKernelNbdClientVm({ port, exportName: 'vol0', connections: 2, timeoutMs: 300_000 });
  t.diagnostic(`VM ${r.verdict} in ${r.elapsedMs} ms`);
  const tail = r.consoleLog.length > 12_000 ? '…' + r.consoleLog.slice(-12_000) : r.consoleLog;
  assert.equal(r.verdict, 'pass', `VM verdict ${r.verdict} (${r.marker ?? 'no marker'}); console:\n${tail}`);
  await stopCluster(cluster);
});
