/**
 * `raftblock status`: the cluster as the nodes see it — its id, nodes (reachable, map epoch), and every
 * placement group with its leader, term, commit and applied index, and whether it is ok,
 * lagging or unavailable. The map comes from `--server`; every node in it is asked for its own
 * /v1/status in parallel (see mergeClusterStatus). Exit 0 when the map was read, whatever the
 * groups' health (that is what the output is for); exit 2 when the server cannot be reached.
 */
import type { Command } from 'commander';
import type { ClusterStatus } from '../../cluster/admin-client.js';
import { adminClientFor, addCommonOptions, table } from './volume.js';

export function renderStatus(s: ClusterStatus, opts: { problemsOnly: boolean }): string {
  const out: string[] = [];
  const { summary } = s;
  out.push(
    `cluster ${s.clusterId ?? '(no id yet)'}; map epoch ${s.epoch} (from ${s.server}); nodes ${summary.nodesReachable}/${summary.nodes} reachable; ` +
      `groups ${summary.groups}: ${summary.ok} ok, ${summary.lagging} lagging, ${summary.unavailable} unavailable` +
      (summary.movesHeld > 0 ? `; ${summary.movesHeld} moving PGs wait for an upgrade` : ''),
  );
  const levels = describeMixedLevels(s.nodes);
  if (levels) out.push(levels);
  out.push('');
  const nodeRows = [['NODE', 'STATE', 'REACHABLE', 'EPOCH', 'BUILD', 'WEIGHT', 'LABELS', 'NBD', 'HTTP']];
  for (const n of s.nodes) {
    const labels = Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-';
    nodeRows.push([
      String(n.id),
      n.replacing ? `${n.state} (replacing)` : n.autoOut ? `${n.state} (down)` : n.state,
      n.reachable ? 'yes' : `no (${n.error ?? 'no answer'})`,
      n.epoch === undefined ? '-' : String(n.epoch),
      n.version === undefined ? '-' : `${n.version} (level ${n.storeOpsLevel ?? '?'})`,
      String(n.weight),
      labels,
      n.addresses.nbd,
      n.addresses.http,
    ]);
  }
  out.push(table(nodeRows));
  out.push('');
  // A move held for an upgrade is a problem to look at, though the PG serves I/O.
  const shown = opts.problemsOnly ? s.groups.filter((g) => g.health !== 'ok' || g.moveHeld !== undefined) : s.groups;
  if (shown.length === 0) {
    out.push(`all ${s.groups.length} groups ok`);
  } else {
    const rows = [['GROUP', 'POOL', 'PG', 'REPLICAS', 'LEADER', 'TERM', 'COMMIT', 'APPLIED', 'HEALTH']];
    for (const g of shown) {
      rows.push([
        String(g.groupId),
        g.pool,
        g.groupId === 0 ? '-' : String(g.pgIndex),
        (g.replicas.join(',') || '-') + (g.configuration ? ` (moving from ${describeConfiguration(g.configuration)}${g.moveHeld ? `; held: ${g.moveHeld}` : ''})` : ''),
        g.leader === 0 ? 'none' : String(g.leader),
        String(g.term),
        String(g.commitIndex),
        String(g.appliedIndex),
        g.reason ? `${g.health}: ${g.reason}` : g.health,
      ]);
    }
    out.push(table(rows));
  }
  return out.join('\n') + '\n';
}

/**
 * A line naming the reachable nodes by the store command level their builds apply, when those
 * differ (a rolling upgrade under way, or a node left behind on an earlier build): commands
 * above the lowest level are refused or held back until every replica applies them.
 */
export function describeMixedLevels(nodes: ClusterStatus['nodes']): string | undefined {
  const byLevel = new Map<number, number[]>();
  for (const n of nodes) {
    if (!n.reachable || n.storeOpsLevel === undefined) continue;
    byLevel.set(n.storeOpsLevel, [...(byLevel.get(n.storeOpsLevel) ?? []), n.id]);
  }
  if (byLevel.size < 2) return undefined;
  const parts = [...byLevel].sort((a, b) => a[0] - b[0]).map(([level, ids]) => `level ${level} on node${ids.length > 1 ? 's' : ''} ${ids.join(', ')}`);
  return `builds differ: store command ${parts.join('; ')} (commands above the lowest level wait for an upgrade)`;
}

/** A Raft configuration that differs from the map: `1,2,3 +4 learner` or `2,3,4 / 1,2,3 joint`. */
function describeConfiguration(c: NonNullable<ClusterStatus['groups'][number]['configuration']>): string {
  let out = c.voters.join(',');
  if (c.votersOutgoing?.length) out += ` / ${c.votersOutgoing.join(',')} joint`;
  if (c.learners?.length) out += ` +${c.learners.join(',')} learner`;
  return out;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('status')
      .description('nodes and placement groups: leader, term, commit and applied index, lagging or unavailable groups')
      .option('--problems', 'list only the groups that are lagging or unavailable'),
  ).action(async (opts: { server: string; tokenFile?: string; json?: boolean; problems?: boolean }) => {
    const status = await adminClientFor(opts).clusterStatus();
    if (opts.json) process.stdout.write(JSON.stringify(status, null, 2) + '\n');
    else process.stdout.write(renderStatus(status, { problemsOnly: opts.problems === true }));
  });
}
