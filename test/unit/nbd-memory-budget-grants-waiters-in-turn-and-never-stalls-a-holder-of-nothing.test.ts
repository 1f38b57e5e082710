import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryBudget, type BudgetHolder } from '../../src/nbd/memory-budget.js';

class Holder implements BudgetHolder {
  budgetHeld = 0;
  budgetWanted = 0;
  readonly grants: number[] = [];
  constructor(readonly name: string, readonly log: string[]) {}
  budgetGranted(bytes: number): void {
    this.grants.push(bytes);
    this.log.push(this.name);
  }
}

test('a holder of nothing takes its request at once, even over the budget and with others waiting', () => {
  const log: string[] = [];
  const budget = new MemoryBudget(100);
  const a = new Holder('a', log);
  const b = new Holder('b', log);
  const c = new Holder('c', log);
  assert.equal(budget.take(a, 100), true);
  assert.equal(budget.take(a, 1), false, 'a holds the whole budget');
  assert.equal(budget.take(b, 150), true, 'b holds nothing: it goes at once, over the budget');
  assert.equal(budget.usedBytes, 250);
  assert.equal(budget.take(c, 10), true);
  assert.equal(budget.waitingCount, 1);
});

test('freed bytes go to the waiters in the order they asked; a small request does not pass a large one', () => {
  const log: string[] = [];
  const budget = new MemoryBudget(100);
  const a = new Holder('a', log);
  const big = new Holder('big', log);
  const small = new Holder('small', log);
  budget.take(a, 60);
  budget.take(big, 10);
  budget.take(small, 10);
  assert.equal(budget.take(big, 50), false, 'over the budget');
  assert.equal(budget.take(small, 5), false, 'fits, but big waits ahead');
  budget.release(a, 30); // 50 used: big's 50 fits, then small's 5 does not (105)
  assert.deepEqual(log, ['big']);
  assert.equal(budget.usedBytes, 100);
  budget.release(a, 30);
  assert.deepEqual(log, ['big', 'small']);
  assert.deepEqual([big.budgetHeld, small.budgetHeld, big.budgetWanted, small.budgetWanted], [60, 15, 0, 0]);
});

test('a waiter whose own bytes are all given back goes at once, ahead of the line', () => {
  const log: string[] = [];
  const budget = new MemoryBudget(100);
  const hog = new Holder('hog', log);
  const first = new Holder('first', log);
  const second = new Holder('second', log);
  budget.take(hog, 100); // never gives anything back (a client that reads nothing)
  budget.take(first, 40);
  budget.take(second, 40);
  assert.equal(budget.take(first, 40), false);
  assert.equal(budget.take(second, 40), false);
  budget.release(second, 40);
  assert.deepEqual(log, ['second'], 'second holds nothing now, so it is not stalled behind first');
  budget.release(first, 40);
  assert.deepEqual(log, ['second', 'first']);
});

test('a holder that leaves the line lets those behind it go', () => {
  const log: string[] = [];
  const budget = new MemoryBudget(100);
  const a = new Holder('a', log);
  const big = new Holder('big', log);
  const small = new Holder('small', log);
  budget.take(a, 90);
  budget.take(big, 1);
  budget.take(small, 1);
  budget.take(big, 50);
  budget.take(small, 5);
  budget.release(a, 10); // 82 used: big's 50 does not fit, small waits behind it
  assert.deepEqual(log, []);
  budget.cancel(big);
  assert.deepEqual(log, ['small']);
  assert.equal(big.budgetWanted, 0);
});

test('property: whatever the order of takes and releases, no holder waits while holding nothing, and the bytes add up', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(3), fc.boolean(), fc.integer({ min: 1, max: 80 })), { maxLength: 200 }), (steps) => {
      const log: string[] = [];
      const budget = new MemoryBudget(100);
      const holders = [0, 1, 2, 3].map((i) => new Holder(String(i), log));
      const taken = holders.map(() => [] as number[]);
      for (const [i, isTake, bytes] of steps) {
        const h = holders[i];
        // A grant since the last step is a taken request of that holder.
        for (const [j, g] of holders.entries()) taken[j].push(...g.grants.splice(0));
        if (isTake) {
          if (h.budgetWanted > 0) continue;
          if (budget.take(h, bytes)) taken[i].push(bytes);
        } else if (taken[i].length > 0) {
          budget.release(h, taken[i].shift()!);
        }
        for (const [j, g] of holders.entries()) {
          if (g.budgetWanted > 0) assert.ok(g.budgetHeld > 0, `holder ${j} waits holding nothing`);
        }
        const held = holders.reduce((s, g) => s + g.budgetHeld, 0);
        assert.equal(budget.usedBytes, held);
        // Over the budget only by requests that went at once for holders of nothing.
        assert.ok(budget.usedBytes <= 100 + 4 * 80);
      }
    }),
    { numRuns: 300 },
  );
});
