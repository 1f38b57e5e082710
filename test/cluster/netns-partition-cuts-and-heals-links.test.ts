import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { NetnsNetwork, requireNetns } from '../helpers/netns.js';

/** Can member `from` open a TCP connection to member `to`? (A listener runs in `to`.) */
function reaches(net: NetnsNetwork, from: number, to: number, port: number): boolean {
  const script = `
    const s = require('net').connect(${port}, '${net.address(to)}');
    s.setTimeout(700, () => { process.stdout.write('timeout'); process.exit(0); });
    s.on('connect', () => { process.stdout.write('ok'); process.exit(0); });
    s.on('error', (e) => { process.stdout.write(e.code); process.exit(0); });`;
  return net.execIn(from, process.execPath, ['-e', script]) === 'ok';
}

test('network namespaces: partitions cut links between groups, heal restores them, close removes everything', (t) => {
  if (!requireNetns(t)) return;
  const net = NetnsNetwork.create(t, 3, false);
  const listeners = [1, 2, 3].map((i) =>
    net.spawnIn(i, process.execPath, ['-e', `require('net').createServer((c) => c.end()).listen(7000, '0.0.0.0', () => console.log('up'))`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  t.after(() => {
    for (const l of listeners) l.kill('SIGKILL');
    net.close();
  });
  return (async () => {
    await Promise.all(listeners.map((l) => new Promise((r) => l.stdout!.once('data', r))));
    assert.ok(reaches(net, 1, 2, 7000) && reaches(net, 2, 3, 7000) && reaches(net, 3, 1, 7000), 'a fresh network is fully connected');
    net.partition([[1], [2, 3]]);
    assert.equal(reaches(net, 1, 2, 7000), false, 'the minority reaches the majority');
    assert.equal(reaches(net, 3, 1, 7000), false, 'the majority reaches the minority');
    assert.ok(reaches(net, 2, 3, 7000), 'the majority lost its own link');
    net.heal();
    assert.ok(reaches(net, 1, 2, 7000) && reaches(net, 3, 1, 7000), 'heal did not restore the links');
    net.isolate(3);
    assert.equal(reaches(net, 2, 3, 7000), false);
    assert.ok(reaches(net, 1, 2, 7000));
    // Loopback inside a member works whatever the partition.
    const local = net.execIn(3, process.execPath, ['-e', `require('net').connect(7000,'127.0.0.1').on('connect',()=>{process.stdout.write('ok');process.exit(0)})`]);
    assert.equal(local, 'ok');
    for (const l of listeners) l.kill('SIGKILL');
    net.close();
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.ok(!left.includes(net.tag), `namespaces left behind: ${left}`);
  })();
});
