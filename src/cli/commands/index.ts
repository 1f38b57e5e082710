import type { Command } from 'commander';

/**
 * Every subcommand, one file each. Add a line here to register a new one.
 */
export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [];
