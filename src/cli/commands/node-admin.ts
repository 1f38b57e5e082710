/**
 * Subcommands of `raftblock node` that change a node's place in the cluster map, through a
 * node's admin API to the metadata group's leader:
 *
 * `raftblock node remove ID` removes a drained node from the map for good (a node that died
 * for good, or one being decommissioned). The node must be marked out first (`raftblock
 * node-state ID out`) and every PG moved off it (`raftblock status` shows none moving, none on
 * it); a member of the metadata group leaves it first. Afterwards a node with an empty data dir
 * may join with the same id; the removed node's own data dir never starts again. Repeating the
 * command answers NOT_FOUND. Refusals: NODE_STILL_IN, NODE_HOLDS_REPLICAS (names the PGs
 * left), META_QUORUM_AT_RISK (see admin-client.ts).
 *
 * `raftblock node replace ID`: node ID lost its data dir (a dead disk, a wiped machine) and is
 * down. The map forgets the lost data dir (its incarnation), so the next node to start with id
 * ID and an empty data dir is taken, at the old addresses or new ones. That node rebuilds every
 * PG replica the id held from the PG's leader before it votes or acknowledges anything, and the
 * metadata group takes it back as a voter (a member leaves it first). Refusals: NODE_ALIVE (the
 * node is reachable: stop it, or use `node remove`), META_QUORUM_AT_RISK, NOT_FOUND.
 */
import type { Command } from 'commander';
import { parseInteger } from '../../common/address.js';
import { maxNodeId } from '../../cluster/map.js';
import { AdminClient, type RemoveNodeResponse } from '../../cluster/admin-client.js';
import { adminClientFor, addCommonOptions } from './volume.js';

/** Long enough for the leader's checks, a group-0 change and the map change, across a leader change. */
const nodeChangeTimeoutMs = 30_000;

/** Adds `remove` and `replace` under the `node` command. */
export function registerNodeAdmin(node: Command): void {
  nodeChange(node, 'remove', 'remove a node marked out, whose placement groups have all moved, from the cluster map', (c, id) => c.removeNode(id), (id, res, meta) =>
    `node ${id} removed from the cluster map at epoch ${res.epoch}${meta}`,
  );
  nodeChange(
    node,
    'replace',
    'let a node whose data dir was lost rejoin under its id with an empty data dir, rebuilding its replicas from their leaders',
    (c, id) => c.replaceNode(id),
    (id, res, meta) => `node ${id} is being replaced from epoch ${res.epoch}${meta}: start it with an empty data dir`,
  );
}

/** Both answers have this shape (ReplaceNodeResponse is the same). */
type NodeChangeResponse = RemoveNodeResponse;

function nodeChange(
  node: Command,
  name: string,
  description: string,
  call: (client: AdminClient, nodeId: number) => Promise<NodeChangeResponse>,
  describe: (nodeId: number, res: NodeChangeResponse, meta: string) => string,
): void {
  addCommonOptions(node.command(`${name} <id>`).description(description)).action(async (id: string, opts: { server: string; tokenFile?: string; json?: boolean }) => {
    const nodeId = parseInteger(id, 'node id', 1, maxNodeId);
    const res = await call(adminClientFor(opts, { timeoutMs: nodeChangeTimeoutMs }), nodeId);
    if (opts.json) process.stdout.write(JSON.stringify(res) + '\n');
    else process.stdout.write(describe(nodeId, res, res.metaVoterRemoved ? ' (it left the metadata group first)' : '') + '\n');
  });
}
