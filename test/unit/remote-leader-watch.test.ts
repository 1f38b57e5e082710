import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RemoteLeaderWatch } from '../../src/cluster/remote-leader-watch.js';
import { until } from '../helpers/until.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const opts = { probeAfterMs: 40, probeIntervalMs: 20 };

/** A probe that records whom it asked and answers from `follows` (a peer → the leader it names). */
function fakeProbe(follows: Map<number, number | Error>) {
  const asked: Array<{ group: number; peer: number }> = [];
  const probe = async (group: number, peer: number): Promise<number> => {
    asked.push({ group, peer });
    const v = follows.get(peer);
    if (v instanceof Error) throw v;
    return v ?? 0;
  };
  return { asked, probe };
}

test('a piece waiting on a replaced leader is abandoned, naming the new one', async () => {
  const follows = new Map<number, number | Error>([[2, 1], [3, 1]]);
  const { asked, probe } = fakeProbe(follows);
  const watch = new RemoteLeaderWatch(probe, opts);
  const a = watch.watch(7, 1, [1, 2, 3]);
  const b = watch.watch(7, 1, [1, 2, 3]);
  // Probes come one per interval after the first is due: wait for two, however late timers run.
  await until(() => asked.length >= 2, 10_000, 'two probes while the pieces waited');
  assert.equal(a.signal.aborted, false, 'the replicas still follow node 1');
  assert.deepEqual(new Set(asked.map((x) => x.peer)), new Set([2, 3]), 'the other replicas, in turn; never the leader itself');
  follows.set(2, 3);
  follows.set(3, 3);
  await until(() => a.signal.aborted, 10_000, 'the watch aborted once a replica named node 3');
  assert.equal(b.signal, a.signal, 'one watch for both pieces');
  assert.equal(a.replacedBy, 3);
  // A piece sent to node 1 afterwards gets a fresh watch, not an aborted signal.
  const c = watch.watch(7, 1, [1, 2, 3]);
  assert.equal(c.signal.aborted, false);
  c.release();
  a.release();
  b.release();
  watch.stop();
});

test('no probe while pieces are answered quickly, nor once none waits', async () => {
  const { asked, probe } = fakeProbe(new Map([[2, 9], [3, 9]]));
  // Each piece waits one sleep(5), which a loaded machine may stretch to hundreds of ms: the
  // probe delay is far above that, and the traffic still lasts 1.5 of it.
  const probeAfterMs = 1500;
  const watch = new RemoteLeaderWatch(probe, { probeAfterMs, probeIntervalMs: 20 });
  // Steady traffic for ~1.5 probeAfterMs: pieces overlap, and each is answered within ~5 ms.
  const trafficUntil = performance.now() + 1.5 * probeAfterMs;
  let prev = watch.watch(7, 1, [1, 2, 3]);
  while (performance.now() < trafficUntil) {
    const next = watch.watch(7, 1, [1, 2, 3]);
    prev.release();
    prev = next;
    await sleep(5);
  }
  prev.release();
  await sleep(80);
  assert.equal(asked.length, 0, `probed ${asked.length} times with no piece overdue`);
  assert.equal(watch.armed, 0, 'an idle watch holds no timer');
  watch.stop();
});

test('replicas that cannot answer, or name the same leader or none, abandon nothing', async () => {
  const { asked, probe } = fakeProbe(new Map<number, number | Error>([[2, new Error('connection refused')], [3, 0], [4, 1]]));
  const watch = new RemoteLeaderWatch(probe, opts);
  const t = watch.watch(5, 1, [1, 2, 3, 4]);
  await until(() => asked.length >= 3, 10_000, 'a probe of each other replica');
  assert.equal(t.signal.aborted, false);
  assert.deepEqual(new Set(asked.map((x) => x.peer)), new Set([2, 3, 4]));
  t.release();
  const probes = asked.length;
  await sleep(60);
  assert.equal(asked.length, probes, 'no probe after the last piece settled');
  watch.stop();
});

test('a group with one replica has nobody to ask; stop ends the probes', async () => {
  const { asked, probe } = fakeProbe(new Map([[2, 3]]));
  const watch = new RemoteLeaderWatch(probe, opts);
  const solo = watch.watch(1, 1, [1]);
  await sleep(70);
  assert.equal(asked.length, 0);
  solo.release();
  const t = watch.watch(2, 1, [1, 2]);
  watch.stop();
  await sleep(70);
  assert.equal(asked.length, 0, 'stopped before the first probe was due');
  assert.equal(t.signal.aborted, false);
  t.release();
});

test('a moved PG (other replicas) is watched with its new replica set', async () => {
  const { asked, probe } = fakeProbe(new Map([[4, 1]]));
  const watch = new RemoteLeaderWatch(probe, opts);
  const old = watch.watch(3, 1, [1, 2, 3]);
  old.release();
  const t = watch.watch(3, 1, [1, 4, 5]);
  await until(() => asked.length > 0, 10_000, 'a probe');
  assert.ok(asked.every((x) => x.peer === 4 || x.peer === 5), JSON.stringify(asked));
  t.release();
  watch.stop();
});
