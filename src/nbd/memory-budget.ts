/**
 * The NBD server's memory budget: bytes held across all its connections for requests in flight
 * and replies queued (a WRITE's payload from before it is read off the socket until the backend
 * has it; a READ's buffer from before the read is issued until its reply is written out). Each
 * connection has bounds of its own (transmission.ts), but with up to maxConnections of them
 * those alone would let clients that never read their replies hold gigabytes.
 *
 * A connection that cannot take what its next request needs stops reading (backpressure) and
 * waits its turn: bytes freed go to the waiters in the order they came, so a large request is
 * not passed over for ever by small ones. One exception keeps the server live: a holder that
 * holds nothing takes its request at once, over the budget if need be. Otherwise clients that
 * hold the budget and read none of their replies (their bytes are never freed) would stall
 * every other client; with it, each connection always has at least one request under way, and
 * the budget is exceeded by at most one request per connection.
 */
import { assert } from '../common/assert.js';

/** A holder of budget: one connection. The fields are the budget's to keep. */
export interface BudgetHolder {
  /** Bytes taken for this holder and not yet released. */
  budgetHeld: number;
  /** Bytes this holder waits for; 0 while it does not wait. */
  budgetWanted: number;
  /**
   * Its wait is over: `bytes` (what it wanted) were taken for it. Called from within
   * release(), possibly deep in another connection's completion: defer the work.
   */
  budgetGranted(bytes: number): void;
}

export class MemoryBudget {
  private used = 0;
  /** Requests that have waited for budget since the start (each waits once: see take). */
  private waits = 0;
  /** Holders waiting, in the order they asked. */
  private readonly waiting: BudgetHolder[] = [];

  constructor(readonly limitBytes: number) {
    assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, `memory budget of ${limitBytes} bytes`);
  }

  /** Bytes held now (may exceed the limit by the exception above). */
  get usedBytes(): number {
    return this.used;
  }

  /** Holders waiting for budget. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Requests that waited for budget (were not granted it when they asked), ever. */
  get waitedCount(): number {
    return this.waits;
  }

  /**
   * Takes `bytes` for `h` if they fit and nobody waits ahead of it, or at once if `h` holds
   * nothing. Otherwise `h` waits in line, and false is returned: budgetGranted() follows once
   * the bytes are taken for it. A holder that waits must not ask again.
   */
  take(h: BudgetHolder, bytes: number): boolean {
    assert(bytes > 0, `budget of ${bytes} bytes asked for`);
    assert(h.budgetWanted === 0, 'budget asked for again while waiting for it');
    if (h.budgetHeld === 0 || (this.waiting.length === 0 && this.used + bytes <= this.limitBytes)) {
      this.used += bytes;
      h.budgetHeld += bytes;
      return true;
    }
    h.budgetWanted = bytes;
    this.waiting.push(h);
    this.waits++;
    return false;
  }

  /** Gives back `bytes` that `h` took; waiters whose turn it is get theirs. */
  release(h: BudgetHolder, bytes: number): void {
    assert(bytes > 0 && bytes <= h.budgetHeld, `release of ${bytes} budget bytes by a holder of ${h.budgetHeld}`);
    this.used -= bytes;
    h.budgetHeld -= bytes;
    // A waiter that now holds nothing may go at once (the exception in take()).
    if (h.budgetWanted > 0 && h.budgetHeld === 0) this.grant(this.waiting.indexOf(h));
    while (this.waiting.length > 0 && this.used + this.waiting[0].budgetWanted <= this.limitBytes) this.grant(0);
  }

  /** `h` is gone: it leaves the line (what it holds it releases itself). */
  cancel(h: BudgetHolder): void {
    if (h.budgetWanted === 0) return;
    const i = this.waiting.indexOf(h);
    assert(i >= 0, 'a waiting budget holder not in line');
    this.waiting.splice(i, 1);
    h.budgetWanted = 0;
    // Those behind it may fit now.
    while (this.waiting.length > 0 && this.used + this.waiting[0].budgetWanted <= this.limitBytes) this.grant(0);
  }

  private grant(i: number): void {
    assert(i >= 0, 'a waiting budget holder not in line');
    const h = this.waiting[i];
    this.waiting.splice(i, 1);
    const bytes = h.budgetWanted;
    h.budgetWanted = 0;
    this.used += bytes;
    h.budgetHeld += bytes;
    h.budgetGranted(bytes);
  }
}
