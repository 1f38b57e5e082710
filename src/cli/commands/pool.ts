/**
 * `raftblock pool create|list|verify|repair|reset-pg`: manage pools through a node's admin API
 * (src/cluster/admin-client.ts). A pool fixes the replication factor, the number of placement
 * groups and the fault-domain level its replicas are spread over; `list` reads them from the
 * cluster map. `--server` and `--json` as for `volume`; errors print `raftblock: MESSAGE [CODE]`
 * and exit 2.
 */
import { Option, type Command } from 'commander';
import { InvalidArgument } from '../../common/errors.js';
import { parseInteger } from '../../common/address.js';
import { maxNodeId, maxPgsPerPool, maxReplicas, type ClusterMap, type Pool } from '../../cluster/map.js';
import { failureDomainLevels, type FailureDomain } from '../../cluster/placement.js';
import { describeGroups } from '../../cluster/pg-verify.js';
import type { PgRepairResult, PgVerifyResult } from '../../cluster/admin-client.js';
import { adminClientFor, addCommonOptions, table } from './volume.js';

interface CommonOptions {
  server: string;
  tokenFile?: string;
  json?: boolean;
}

/** What `pool list --json` prints per pool (the map's pool without its per-PG replica sets). */
export interface PoolSummary {
  id: number;
  name: string;
  replicas: number;
  pgCount: number;
  failureDomain: FailureDomain;
  /** Volumes placed in the pool. */
  volumes: number;
}

export function summarizePool(p: Pool, volumes: number): PoolSummary {
  return { id: p.id, name: p.name, replicas: p.replicas, pgCount: p.pgCount, failureDomain: p.failureDomain, volumes };
}

export function summarizePools(map: ClusterMap): PoolSummary[] {
  return map.pools.map((p) => summarizePool(p, map.volumes.filter((v) => v.pool === p.name).length));
}

/** Exit status of `pool verify` when replicas disagree (errors exit 2, as for every command). */
export const verifyMismatchExit = 1;
/** ... when some PG could not be compared (a replica unreachable or restoring a snapshot, or writes never paused). */
export const verifyIncompleteExit = 3;

/** One line per PG: what `pool verify` found. */
export function renderVerify(results: readonly PgVerifyResult[]): string {
  const rows = [['POOL', 'PG', 'GROUP', 'REPLICAS', 'APPLIED', 'RESULT']];
  for (const r of results) {
    let applied = '-';
    let result: string;
    switch (r.result) {
      case 'consistent':
        applied = String(r.appliedIndex);
        result = 'consistent';
        break;
      case 'mismatch':
        applied = String(r.appliedIndex);
        result = 'MISMATCH: ' + describeGroups(r.groups);
        break;
      case 'busy':
        result = `not compared: writes under way (applied ${Object.entries(r.appliedIndexes).map(([n, i]) => `${n}:${i}`).join(' ')})`;
        break;
      case 'restoring':
        result = `not compared: node ${r.nodeIds.join(', ')} restoring a snapshot (verify again once it has caught up)`;
        break;
      case 'incomplete':
        result = 'not compared: ' + Object.entries(r.errors).map(([n, e]) => `node ${n}: ${e}`).join('; ');
        break;
    }
    rows.push([r.pool, String(r.pgIndex), String(r.groupId), r.replicas.join(','), applied, result]);
  }
  const bad = results.filter((r) => r.result === 'mismatch').length;
  const open = results.filter((r) => r.result === 'busy' || r.result === 'restoring' || r.result === 'incomplete').length;
  return `${table(rows)}
${results.length} PGs: ${results.length - bad - open} consistent, ${bad} mismatched, ${open} not compared
`;
}

/** One line per replica rebuilt (or PG left alone) by `pool verify --repair`. */
export function renderRepairs(repaired: readonly PgRepairResult[], left: readonly { pool: string; pgIndex: number; reason: string }[]): string {
  const lines = repaired.map((r) => describeRepair(r));
  for (const l of left) lines.push(`not repaired: PG ${l.pool}/${l.pgIndex}: ${l.reason}`);
  return lines.join('\n');
}

function describeRepair(r: PgRepairResult): string {
  return `rebuilt node ${r.nodeId}'s replica of PG ${r.pool}/${r.pgIndex} (group ${r.groupId}) from node ${r.leader}: applied index ${r.appliedIndex}, ${(r.elapsedMs / 1000).toFixed(1)} s`;
}

/** The exit status for a verify: a mismatch outranks a PG left uncompared. */
export function verifyExitCode(results: readonly PgVerifyResult[]): number {
  if (results.some((r) => r.result === 'mismatch')) return verifyMismatchExit;
  if (results.some((r) => r.result !== 'consistent')) return verifyIncompleteExit;
  return 0;
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

function describePool(p: Pool | PoolSummary): string {
  return `${p.name}: ${p.replicas} replicas on distinct ${p.failureDomain}s, ${p.pgCount} PGs (id ${p.id})`;
}

export function register(program: Command): void {
  const pool = program.command('pool').description('create, list, verify and repair pools (replication factor, placement groups, fault domain)');

  addCommonOptions(
    pool
      .command('create <name>')
      .description('create a pool')
      .requiredOption('--replicas <n>', `copies of every block, each in a distinct fault domain (1-${maxReplicas})`)
      .requiredOption('--pgs <n>', `placement groups (Raft groups) the pool's volumes are striped over (1-${maxPgsPerPool})`)
      .addOption(new Option('--domain <level>', 'fault-domain level the replicas of a PG are spread over').choices([...failureDomainLevels]).default('zone')),
  ).action(async (name: string, opts: CommonOptions & { replicas: string; pgs: string; domain: FailureDomain }) => {
    const replicas = parseInteger(opts.replicas, '--replicas', 1, maxReplicas);
    const pgCount = parseInteger(opts.pgs, '--pgs', 1, maxPgsPerPool);
    const res = await adminClientFor(opts).createPool({ name, replicas, pgCount, failureDomain: opts.domain });
    if (opts.json) print(JSON.stringify({ epoch: res.epoch, pool: summarizePool(res.pool, 0) }, null, 2));
    else if (res.changed === false) print(`pool ${describePool(res.pool)} already exists as asked (map epoch ${res.epoch})`);
    else print(`created pool ${describePool(res.pool)} at map epoch ${res.epoch}`);
  });

  addCommonOptions(
    pool
      .command('verify [pool]')
      .description(
        `compare the data of every replica of every PG (of one pool, or all): reads each replica in full; ` +
          `exit ${verifyMismatchExit} when replicas disagree, ${verifyIncompleteExit} when a PG could not be compared`,
      )
      .option('--pg <index>', 'only this PG of the pool')
      .option('--attempts <n>', 'times a PG being written is asked again before it is left uncompared', '5')
      .option('--repair', "rebuild the odd replicas out of a mismatched PG from their leaders where a majority of its replicas holds one copy (see pool repair), then verify again"),
  ).action(async (name: string | undefined, opts: CommonOptions & { pg?: string; attempts: string; repair?: boolean }) => {
    if (opts.pg !== undefined && name === undefined) throw new InvalidArgument('--pg needs the pool it belongs to');
    const pgIndex = opts.pg === undefined ? undefined : parseInteger(opts.pg, '--pg', 0, maxPgsPerPool - 1);
    const attempts = parseInteger(opts.attempts, '--attempts', 1, 1000);
    const client = adminClientFor(opts);
    let results = await client.verifyPgs({ pool: name, pgIndex, attempts });
    if (opts.repair && results.some((r) => r.result === 'mismatch')) {
      if (!opts.json) print(renderVerify(results));
      const done = await client.repairMismatches(results);
      results = await client.verifyPgs({ pool: name, pgIndex, attempts });
      if (opts.json) print(JSON.stringify({ repaired: done.repaired, notRepaired: done.left, results }, null, 2));
      else print(renderRepairs(done.repaired, done.left) + '\nafter the repairs:\n' + renderVerify(results));
    } else {
      print(opts.json ? JSON.stringify(results, null, 2) : renderVerify(results));
    }
    process.exitCode = verifyExitCode(results);
  });

  addCommonOptions(
    pool
      .command('repair <pool> <index>')
      .description(
        "rebuild one node's replica of a PG from the PG's leader (the odd one out that `pool verify` names): " +
          'the replica is held, refilled from the leader\'s snapshot and caught up; refused while the other replicas would not make a quorum without it, ' +
          'and (the PG is verified first) for a replica holding the copy a majority holds or from a leader that does not',
      )
      .requiredOption('--node <id>', 'the node whose replica is rebuilt')
      .option('--force', 'rebuild it even when the PG\'s copies cannot be told apart, or it holds the majority\'s copy')
      .option('--timeout <seconds>', 'how long to wait for the rebuilt replica to catch up', '600'),
  ).action(async (name: string, index: string, opts: CommonOptions & { node: string; timeout: string; force?: boolean }) => {
    const pgIndex = parseInteger(index, 'index', 0, maxPgsPerPool - 1);
    const nodeId = parseInteger(opts.node, '--node', 1, maxNodeId);
    const timeoutMs = parseInteger(opts.timeout, '--timeout', 1, 86_400) * 1000;
    const r = await adminClientFor(opts).repairPg({ pool: name, pgIndex, nodeId, timeoutMs, force: opts.force === true });
    if (opts.json) return print(JSON.stringify(r, null, 2));
    print(`${describeRepair(r)} (check it: raftblock pool verify ${r.pool} --pg ${r.pgIndex})`);
  });

  addCommonOptions(
    pool
      .command('reset-pg <pool> <index>')
      .description('start a PG over, empty, after every replica of it lost its data dir (each node replaced): what it held is lost')
      .option('--accept-data-loss', 'required: the PG\'s blocks read as zeros afterwards'),
  ).action(async (name: string, index: string, opts: CommonOptions & { acceptDataLoss?: boolean }) => {
    const pg = parseInteger(index, 'index', 0, maxPgsPerPool - 1);
    if (!opts.acceptDataLoss) throw new InvalidArgument(`resetting PG ${name}/${pg} loses whatever it held: give --accept-data-loss`);
    const res = await adminClientFor(opts).resetPg(name, pg);
    if (opts.json) print(JSON.stringify({ epoch: res.epoch, pool: name, pg, replicas: res.pool.pgs[pg].replicas }, null, 2));
    else print(`PG ${name}/${pg} starts over empty on node ${res.pool.pgs[pg].replicas.join(', ')} (map epoch ${res.epoch})`);
  });

  addCommonOptions(pool.command('list').description('list pools')).action(async (opts: CommonOptions) => {
    const map = await adminClientFor(opts).map();
    const pools = summarizePools(map);
    if (opts.json) return print(JSON.stringify({ epoch: map.epoch, pools }, null, 2));
    if (pools.length === 0) return print(`no pools (map epoch ${map.epoch})`);
    const rows = [['NAME', 'ID', 'REPLICAS', 'PGS', 'DOMAIN', 'VOLUMES']];
    for (const p of pools) rows.push([p.name, String(p.id), String(p.replicas), String(p.pgCount), p.failureDomain, String(p.volumes)]);
    print(table(rows));
  });
}
