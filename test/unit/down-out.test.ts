/**
 * The down-out rule (pure, on a clock the test drives) and its runner on fake probes: who is
 * marked out and when, what holds a node in, and who comes back in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { DownOut, type DownOutStep } from '../../src/cluster/down-out.js';
import { DownOutRunner } from '../../src/cluster/down-out-runner.js';
import { applyCommand, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';
import type { Logger } from '../../src/common/log.js';
import { applyAll, zonedMap } from '../helpers/map.js';
import { spawnSync } from 'node:child_process';
import { parseSecondsToMs } from '../../src/common/address.js';
import { cliPath } from '../helpers/paths.js';

const cfg = { intervalMs: 10_000, minInRatio: 0.75 };
const anyPlacement = (): boolean => true;

test('a node is marked out once unreachable for the interval; an answer restarts its clock', () => {
  const rule = new DownOut(cfg);
  const map = zonedMap(5, 8);
  rule.observe(5, false, 1_000);
  assert.deepEqual(rule.next(10_999, 1, map.nodes, anyPlacement), { kind: 'none' });
  rule.observe(5, false, 6_000); // still down: the clock runs from its first failure
  assert.deepEqual(rule.next(11_000, 1, map.nodes, anyPlacement), { kind: 'out', nodeId: 5, downForMs: 10_000 });
  rule.observe(5, true, 11_500);
  rule.observe(5, false, 12_000);
  assert.deepEqual(rule.next(21_999, 1, map.nodes, anyPlacement), { kind: 'none' }, 'one answer restarted the clock');
  assert.equal(rule.next(22_000, 1, map.nodes, anyPlacement).kind, 'out');
});

test('the node down longest goes first, one per round; the leader itself never', () => {
  const rule = new DownOut({ intervalMs: 10_000, minInRatio: 0.5 });
  const map = zonedMap(6, 8);
  rule.observe(4, false, 2_000);
  rule.observe(3, false, 1_000);
  rule.observe(1, false, 0); // the leader's own id (a probe never goes there; ignored anyway)
  assert.deepEqual(rule.next(20_000, 1, map.nodes, anyPlacement), { kind: 'out', nodeId: 3, downForMs: 19_000 });
  const afterOne = applyAll(map, { type: 'setNodeState', id: 3, state: 'out', auto: true });
  assert.deepEqual(rule.next(20_000, 1, afterOne.nodes, anyPlacement), { kind: 'out', nodeId: 4, downForMs: 18_000 });
});

test('a node stays in when too few nodes would be left in, or when placement needs it', () => {
  const rule = new DownOut(cfg);
  // Four nodes: one may go out (3 of 4 is the 75 % floor), a second may not.
  let map = zonedMap(4, 8);
  rule.observe(3, false, 0);
  rule.observe(4, false, 0);
  const first = rule.next(10_000, 1, map.nodes, anyPlacement);
  assert.equal(first.kind, 'out');
  map = applyAll(map, { type: 'setNodeState', id: (first as { nodeId: number }).nodeId, state: 'out', auto: true });
  const second = rule.next(10_000, 1, map.nodes, anyPlacement);
  assert.equal(second.kind, 'hold');
  assert.match((second as { reason: string }).reason, /2 of 4 nodes would stay in, fewer than 3/);
  // Placement refuses (too few fault domains): held, with the reason.
  const fresh = new DownOut(cfg);
  fresh.observe(4, false, 0);
  const held = fresh.next(10_000, 1, zonedMap(4, 8).nodes, () => false);
  assert.equal(held.kind, 'hold');
  assert.match((held as { reason: string }).reason, /could not be placed/);
  // Disabled: nothing is marked out.
  const off = new DownOut({ ...cfg, intervalMs: 0 });
  off.observe(4, false, 0);
  assert.deepEqual(off.next(1e9, 1, zonedMap(4, 8).nodes, anyPlacement), { kind: 'none' });
});

test('a node the rule marked out comes back in once it answers, even with the rule disabled; an operator-out node does not', () => {
  const map = applyAll(zonedMap(5, 8), { type: 'setNodeState', id: 5, state: 'out', auto: true }, { type: 'setNodeState', id: 4, state: 'out' });
  for (const intervalMs of [10_000, 0]) {
    const rule = new DownOut({ ...cfg, intervalMs });
    assert.deepEqual(rule.next(0, 1, map.nodes, anyPlacement), { kind: 'none' }, 'not before it answered');
    rule.observe(5, false, 0);
    assert.deepEqual(rule.next(0, 1, map.nodes, anyPlacement), { kind: 'none' });
    rule.observe(4, true, 1);
    rule.observe(5, true, 1);
    assert.deepEqual(rule.next(1, 1, map.nodes, anyPlacement), { kind: 'in', nodeId: 5 });
  }
});

test('a new leader starts every clock over', () => {
  const rule = new DownOut(cfg);
  const map = zonedMap(5, 8);
  rule.observe(5, false, 0);
  rule.reset();
  rule.observe(5, false, 9_000);
  assert.deepEqual(rule.next(10_000, 1, map.nodes, anyPlacement), { kind: 'none' });
  assert.equal(rule.next(19_000, 1, map.nodes, anyPlacement).kind, 'out');
});

test('under any probe history the rule never leaves fewer than the floor in, and marks out only nodes down for the interval (property)', () => {
  const probe = fc.record({ node: fc.integer({ min: 1, max: 6 }), answered: fc.boolean(), advanceMs: fc.integer({ min: 0, max: 4_000 }) });
  fc.assert(
    fc.property(fc.array(probe, { maxLength: 120 }), fc.integer({ min: 1, max: 6 }), (probes, leader) => {
      const rule = new DownOut(cfg);
      let map: ClusterMap = zonedMap(6, 8);
      const floor = Math.ceil(cfg.minInRatio * 6);
      const lastAnswerMs = new Map<number, number>();
      const firstFailMs = new Map<number, number>();
      let now = 0;
      for (const p of probes) {
        now += p.advanceMs;
        if (p.node !== leader) {
          rule.observe(p.node, p.answered, now);
          if (p.answered) {
            lastAnswerMs.set(p.node, now);
            firstFailMs.delete(p.node);
          } else if (!firstFailMs.has(p.node)) firstFailMs.set(p.node, now);
        }
        const inBefore = map.nodes.filter((n) => n.state === 'in').length;
        const step: DownOutStep = rule.next(now, leader, map.nodes, (id) => applyCommand(map, { type: 'setNodeState', id, state: 'out', auto: true }).ok);
        if (step.kind === 'out') {
          assert.notEqual(step.nodeId, leader);
          assert.ok(firstFailMs.has(step.nodeId) && now - firstFailMs.get(step.nodeId)! >= cfg.intervalMs, `node ${step.nodeId} was not down for the interval`);
          assert.ok(inBefore - 1 >= floor);
        }
        if (step.kind === 'in') assert.ok(!firstFailMs.has(step.nodeId), `node ${step.nodeId} marked in while its latest probe failed`);
        if (step.kind === 'out' || step.kind === 'in') map = applyAll(map, { type: 'setNodeState', id: step.nodeId, state: step.kind, auto: true });
        assert.ok(map.nodes.filter((n) => n.state === 'in').length >= floor);
      }
    }),
    { numRuns: 300 },
  );
});

/** A runner on fake probes and a fake clock, proposing into a map held here. */
function fakeRunner(nodes: number, down: Set<number>, reachers: number[] = []) {
  let map = zonedMap(nodes, 8);
  let now = 0;
  let leading = true;
  const proposed: MapCommand[] = [];
  const warnings: string[] = [];
  const holdReasons: string[] = [];
  const probed: number[] = [];
  const log: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg, fields) => {
      warnings.push(msg);
      if (typeof fields?.reason === 'string') holdReasons.push(fields.reason);
    },
    error: () => undefined,
    child: () => log,
  };
  const registry = new Registry();
  const runner = new DownOutRunner(cfg, {
    self: 1,
    leading: () => leading,
    map: () => map,
    probe: async (id) => (probed.push(id), !down.has(id)),
    reachedBy: async () => [...reachers],
    propose: async (cmd) => {
      proposed.push(cmd);
      map = applyAll(map, cmd);
    },
    log,
    registry,
    nowMs: () => now,
  });
  return {
    runner,
    registry,
    proposed,
    warnings,
    holdReasons,
    probed,
    map: () => map,
    advance: (ms: number) => void (now += ms),
    setLeading: (v: boolean) => void (leading = v),
  };
}

test('the runner probes every other node, proposes the rule’s change, counts it, and logs a standing hold once', async () => {
  const down = new Set([4, 5]);
  const f = fakeRunner(5, down);
  await f.runner.round();
  assert.deepEqual(f.probed.sort(), [2, 3, 4, 5]);
  assert.match(await f.registry.getSingleMetricAsString('raftblock_nodes_unreachable'), /raftblock_nodes_unreachable 2/);
  f.advance(10_000);
  await f.runner.round();
  assert.deepEqual(f.proposed, [{ type: 'setNodeState', id: 4, state: 'out', auto: true }]);
  // Node 5 is due too, but 3 of 5 in would be below the floor of 4: held, logged once.
  for (let i = 0; i < 3; i++) {
    f.advance(1_000);
    await f.runner.round();
  }
  assert.equal(f.proposed.length, 1);
  assert.equal(f.warnings.filter((w) => w.includes('left in')).length, 1);
  // Node 4 answers again: back in.
  down.delete(4);
  await f.runner.round();
  assert.deepEqual(f.proposed.at(-1), { type: 'setNodeState', id: 4, state: 'in', auto: true });
  assert.equal(f.map().nodes.find((n) => n.id === 4)?.state, 'in');
  const counts = await f.registry.getSingleMetricAsString('raftblock_node_down_out_changes_total');
  assert.match(counts, /state="out"} 1/);
  assert.match(counts, /state="in"} 1/);
});

test('the runner does nothing off the leader, and a leadership change restarts the clocks', async () => {
  const f = fakeRunner(5, new Set([5]));
  f.setLeading(false);
  await f.runner.round();
  assert.deepEqual(f.probed, []);
  f.setLeading(true);
  await f.runner.round();
  f.advance(9_000);
  f.setLeading(false);
  await f.runner.round();
  f.setLeading(true);
  await f.runner.round(); // clocks start over here
  f.advance(9_000);
  await f.runner.round();
  assert.deepEqual(f.proposed, [], 'no node is out 9 s after the clocks started over');
  f.advance(1_000);
  await f.runner.round();
  assert.deepEqual(f.proposed, [{ type: 'setNodeState', id: 5, state: 'out', auto: true }]);
});

test('--down-out-interval takes whole seconds, 0 for never; anything else is refused before the node starts', () => {
  assert.equal(parseSecondsToMs('0', '--down-out-interval', 'never mark out'), 0);
  assert.equal(parseSecondsToMs(' 600 ', '--down-out-interval', 'never mark out'), 600_000);
  assert.equal(parseSecondsToMs(undefined, '--down-out-interval', 'never mark out'), undefined);
  for (const bad of ['-1', 'soon', '1.5', '']) {
    const r = spawnSync(process.execPath, [cliPath, 'node', '--id', '1', '--data', '/nonexistent', '--bootstrap', '--down-out-interval', bad], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(r.status, 0, `--down-out-interval ${JSON.stringify(bad)} was accepted`);
    assert.match(r.stderr, /--down-out-interval must be a whole number of seconds \(0: never mark out\)/);
  }
});

test('a node due out that other nodes still reach stays in (a cut between it and the leader), until they do not', async () => {
  const reachers = [2, 3];
  const f = fakeRunner(5, new Set([5]), reachers);
  await f.runner.round();
  for (let i = 0; i < 3; i++) {
    f.advance(5_000);
    await f.runner.round();
  }
  assert.deepEqual(f.proposed, []);
  const held = f.warnings.filter((w) => w.includes('left in'));
  assert.equal(held.length, 1, 'the standing hold is logged once');
  assert.match(f.holdReasons.at(-1) ?? '', /nodes 2, 3 reach it/);
  reachers.length = 0;
  f.advance(1_000);
  await f.runner.round();
  assert.deepEqual(f.proposed, [{ type: 'setNodeState', id: 5, state: 'out', auto: true }]);
});
