/**
 * `raftblock node remove ID`: removes a drained node from the cluster map for good (a node that
 * died for good, or one being decommissioned), through a node's admin API to the metadata
 * group's leader. The node must be marked out first (`raftblock node-state ID out`) and every
 * PG moved off it (`raftblock status` shows none moving, none on it); a member of the
 * metadata group leaves it first. Afterwards a node with an empty data dir may join with the
 * same id; the removed node's own data dir never starts again. Repeating the command answers
 * NOT_FOUND. Refusals: NODE_STILL_IN, NODE_HOLDS_REPLICAS (names the PGs left),
 * META_QUORUM_AT_RISK (see admin-client.ts).
 */
import type { Command } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { AdminClient } from '../../cluster/admin-client.js';
import { addCommonOptions } from './volume.js';

/** Long enough for the leader's checks, a group-0 change and the map change, across a leader change. */
const removeNodeTimeoutMs = 30_000;

/** Adds `remove` under the `node` command. */
export function registerNodeRemove(node: Command): void {
  addCommonOptions(
    node
      .command('remove <id>')
      .description('remove a node marked out, whose placement groups have all moved, from the cluster map'),
  ).action(async (id: string, opts: { server: string; json?: boolean }) => {
    const nodeId = Number(id);
    if (!Number.isSafeInteger(nodeId) || nodeId < 1) throw new InvalidArgument(`node id must be a positive integer, got ${JSON.stringify(id)}`);
    const res = await new AdminClient(opts.server, { timeoutMs: removeNodeTimeoutMs }).removeNode(nodeId);
    if (opts.json) process.stdout.write(JSON.stringify(res) + '\n');
    else {
      const meta = res.metaVoterRemoved ? ' (it left the metadata group first)' : '';
      process.stdout.write(`node ${nodeId} removed from the cluster map at epoch ${res.epoch}${meta}\n`);
    }
  });
}
