import type { Command } from 'commander';
import { register as checkHistory } from './check-history.js';
import { register as exportFile } from './export-file.js';

/**
 * Every subcommand, one file each. Add a line here to register a new one.
 */
export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [checkHistory, exportFile];
