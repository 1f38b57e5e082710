#!/usr/bin/env -S GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=8388608:glibc.malloc.trim_threshold=268435456:${GLIBC_TUNABLES} node --initial-old-space-size=512
/**
 * The `raftblock` command. The only module that reads argv and the environment.
 * Each subcommand lives in its own file under ./commands and registers itself here.
 * The shebang's V8 flag and malloc tunables are the storage nodes' (node-flags.ts; keep them
 * equal): the tunables go in front of the caller's own GLIBC_TUNABLES, so the caller's win.
 */
import { Command, CommanderError } from 'commander';
import { RaftblockError } from '../common/errors.js';
import { parseLogLevel, setLogLevel } from '../common/log.js';
import { commands } from './commands/index.js';
import { raftblockVersion } from '../common/version.js';

const program = new Command();
program
  .name('raftblock')
  .description('A replicated block store served over NBD')
  .version(raftblockVersion)
  .showHelpAfterError()
  .exitOverride();

for (const register of commands) register(program);

try {
  const logLevel = parseLogLevel(process.env.RAFTBLOCK_LOG);
  if (logLevel !== undefined) setLogLevel(logLevel);
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof RaftblockError) {
    process.stderr.write(`raftblock: ${err.message} [${err.code}]\n`);
    process.exit(2);
  }
  throw err;
}
