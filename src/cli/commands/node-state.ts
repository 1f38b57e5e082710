/**
 * `raftblock node-state ID in|out`: marks a node `out` (placement moves its PGs to the other
 * nodes; `raftblock status` shows the PGs moving and when they are done) or back `in`. The
 * node keeps serving as a gateway either way.
 */
import type { Command } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { parseInteger } from '../../common/address.js';
import { maxNodeId } from '../../cluster/map.js';
import { adminClientFor, addCommonOptions } from './volume.js';

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('node-state <id> <state>')
      .description('mark a node out (its placement groups move to other nodes) or back in'),
  ).action(async (id: string, state: string, opts: { server: string; tokenFile?: string; json?: boolean }) => {
    const nodeId = parseInteger(id, 'node id', 1, maxNodeId);
    if (state !== 'in' && state !== 'out') throw new InvalidArgument(`state must be in or out, got ${JSON.stringify(state)}`);
    const res = await adminClientFor(opts).setNodeState(nodeId, state);
    if (opts.json) process.stdout.write(JSON.stringify(res) + '\n');
    else process.stdout.write(`node ${nodeId} is ${state} at map epoch ${res.epoch}\n`);
  });
}
