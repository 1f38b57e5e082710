/**
 * The flag that sets the NBD server's memory budget (nbd/memory-budget.ts): `--nbd-memory-budget`
 * on `raftblock node` and `raftblock start` (which gives it to its nodes), `--memory-budget` on
 * `raftblock export-file`. One parser and one help text for the three.
 */
import { formatSize, parseSizeInRange } from '../common/address.js';
import { defaultNbdMemoryBudgetBytes, maxNbdMemoryBudgetBytes, minNbdMemoryBudgetBytes } from '../nbd/server.js';

export const nbdMemoryBudgetHelp = `bytes the NBD server holds for requests in flight and replies queued, all clients together (e.g. 256M, 2G; ${formatSize(minNbdMemoryBudgetBytes)} to ${formatSize(maxNbdMemoryBudgetBytes)}); a client past it is not read from until bytes are freed (default ${formatSize(defaultNbdMemoryBudgetBytes)})`;

/** The budget a flag gives (`flag` names it in an error), in bytes; undefined: the default. */
export function parseNbdMemoryBudget(text: string | undefined, flag: string): number | undefined {
  return text === undefined ? undefined : parseSizeInRange(text, flag, minNbdMemoryBudgetBytes, maxNbdMemoryBudgetBytes);
}
