import type { Command } from 'commander';
import { register as checkHistory } from './check-history.js';

/**
 * Every subcommand, one file each. Add a line here to register a new one.
 */
export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [checkHistory];
