import type { Command } from 'commander';
import { register as checkHistory } from './check-history.js';
import { register as exportFile } from './export-file.js';
import { register as volume } from './volume.js';
import { register as pool } from './pool.js';
import { register as status } from './status.js';
import { register as node } from './node.js';
import { register as start } from './start.js';
import { register as sim } from './sim.js';
import { register as nodeState } from './node-state.js';

/**
 * Every subcommand, one file each. Add a line here to register a new one.
 */
export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [checkHistory, exportFile, volume, pool, status, sim, node, start, nodeState];
