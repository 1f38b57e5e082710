/**
 * `raftblock node replace ID`: node ID lost its data dir (a dead disk, a wiped machine) and is
 * down. Through a node's admin API to the metadata group's leader, the map forgets the lost
 * data dir (its incarnation), so the next node to start with id ID and an empty data dir is
 * taken, at the old addresses or new ones. That node rebuilds every PG replica the id held
 * from the PG's leader before it votes or acknowledges anything, and the metadata group takes
 * it back as a voter. A member of the metadata group leaves it first. Refusals: NODE_ALIVE
 * (the node is reachable: stop it, or use `node remove`), META_QUORUM_AT_RISK, NOT_FOUND.
 */
import type { Command } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { AdminClient } from '../../cluster/admin-client.js';
import { addCommonOptions } from './volume.js';

/** Long enough for a group-0 change and the map change, across a leader change. */
const replaceNodeTimeoutMs = 30_000;

/** Adds `replace` under the `node` command. */
export function registerNodeReplace(node: Command): void {
  addCommonOptions(
    node
      .command('replace <id>')
      .description('let a node whose data dir was lost rejoin under its id with an empty data dir, rebuilding its replicas from their leaders'),
  ).action(async (id: string, opts: { server: string; json?: boolean }) => {
    const nodeId = Number(id);
    if (!Number.isSafeInteger(nodeId) || nodeId < 1) throw new InvalidArgument(`node id must be a positive integer, got ${JSON.stringify(id)}`);
    const res = await new AdminClient(opts.server, { timeoutMs: replaceNodeTimeoutMs }).replaceNode(nodeId);
    if (opts.json) process.stdout.write(JSON.stringify(res) + '\n');
    else {
      const meta = res.metaVoterRemoved ? ' (it left the metadata group first)' : '';
      process.stdout.write(`node ${nodeId} is being replaced from epoch ${res.epoch}${meta}: start it with an empty data dir\n`);
    }
  });
}
