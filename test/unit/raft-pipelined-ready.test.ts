import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from '../../src/sim/harness.js';
import { EntryType, type MsgApp } from '../../src/raft/types.js';

/*
 * Readies taken while earlier ones are still being persisted (Config.maxOutstandingReadies):
 * each hands out only what the earlier ones did not, they advance in the order taken, and an
 * entry counts as durable only once the Ready that wrote it (or a later one) is advanced.
 */

test('pipelined Readies hand out each entry once, stop at the limit and advance in order', () => {
  const h = new Harness([1], { maxOutstandingReadies: 3 });
  h.elect(1);
  const r = h.raft(1);
  const st = h.node(1).storage;
  const b = r.status().lastIndex; // the leader's no-op, applied
  h.proposeString(1, 'a');
  const rd1 = r.ready();
  h.proposeString(1, 'b');
  assert.equal(r.hasReady(), true, 'a second Ready while the first is being written');
  const rd2 = r.ready();
  h.proposeString(1, 'c');
  const rd3 = r.ready();
  assert.deepEqual([rd1, rd2, rd3].map((rd) => rd.entries.map((e) => e.index)), [[b + 1], [b + 2], [b + 3]]);
  h.proposeString(1, 'd');
  assert.equal(r.hasReady(), false, 'three outstanding: the limit');
  assert.throws(() => r.ready(), /outstanding/);
  for (const rd of [rd1, rd2, rd3]) st.append(rd.entries);
  assert.throws(() => r.advance(rd2), /oldest outstanding/);
  assert.equal(r.committed, b, 'nothing new counts before its Ready is advanced');
  r.advance(rd1);
  assert.equal(r.committed, b + 1, 'a single voter commits what its advanced Ready wrote');
  r.advance(rd2);
  r.advance(rd3);
  assert.equal(r.committed, b + 3);
  const rd4 = r.ready();
  assert.deepEqual(rd4.entries.map((e) => e.index), [b + 4]);
  assert.deepEqual(rd4.committedEntries.map((e) => e.index), [b + 1, b + 2, b + 3]);
  st.append(rd4.entries);
  h.proposeString(1, 'e');
  const rd5 = r.ready();
  assert.deepEqual(rd5.committedEntries, [], 'entries handed out for apply are not handed out again');
  r.advance(rd4);
  st.append(rd5.entries);
  r.advance(rd5);
  const rd6 = r.ready();
  assert.deepEqual(rd6.committedEntries.map((e) => e.index), [b + 4, b + 5]);
  r.advance(rd6);
  assert.equal(r.status().applied, b + 5);
});

test('a follower whose tail is replaced while the old one is being written hands out the new tail and counts it durable only once written', () => {
  const h = new Harness([1, 2, 3], { maxOutstandingReadies: 4 });
  h.elect(1);
  const f = h.raft(2);
  const term = f.currentTerm;
  const last = f.status().hardState.commit; // the leader's no-op, everywhere
  const ent = (index: number, t: number) => ({ index, term: t, type: EntryType.Normal, data: new TextEncoder().encode(`e${index}t${t}`) });
  const app = (t: number, index: number, logTerm: number, entries: ReturnType<typeof ent>[]): MsgApp => ({
    type: 'app', from: 1, to: 2, term: t, index, logTerm, entries, commit: last, seq: 0, tick: 0,
  });
  // Two uncommitted entries of the current leader arrive; their write starts.
  f.step(app(term, last, term, [ent(last + 1, term), ent(last + 2, term)]));
  const rd1 = f.ready();
  assert.deepEqual(rd1.entries.map((e) => e.index), [last + 1, last + 2]);
  // A new leader (term + 1) replaces the second entry before the write ends.
  f.step(app(term + 1, last + 1, term, [ent(last + 2, term + 1)]));
  const rd2 = f.ready();
  assert.deepEqual(rd2.entries.map((e) => [e.index, e.term]), [[last + 2, term + 1]], 'the replacement is handed out');
  const ack = rd2.messages.find((m) => m.type === 'appResp' && !m.reject && m.index === last + 2);
  assert.ok(ack, 'the new leader hears of the replacement from the Ready that writes it');
  const st = h.node(2).storage;
  st.append(rd1.entries);
  f.advance(rd1);
  // The old write's last entry was replaced, so none of it is counted yet (conservative: its
  // first entry, still valid, counts once the write that follows it ends).
  assert.equal(f.log.stableLastIndex(), last, 'the replaced entry is not counted durable by the old write');
  st.append(rd2.entries);
  f.advance(rd2);
  assert.equal(f.log.stableLastIndex(), last + 2);
  assert.equal(f.log.term(last + 2), term + 1);
});
