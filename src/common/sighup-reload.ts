/**
 * Re-reading key and certificate files on SIGHUP, so they change without a restart (which would
 * drop every client's connection): the NBD PSK file (users added or removed) and the HTTPS
 * certificate (renewed). A file that no longer reads is logged and what is in force stays.
 */
import type { Logger } from './log.js';

/** On every SIGHUP, runs `reload` (which reads `path` and installs what it holds); returns the handler's removal. */
export function reloadOnSighup(what: string, path: string, reload: () => void, log: Logger): () => void {
  const onHup = (): void => {
    try {
      reload();
      log.info(`reloaded ${what}`, { path });
    } catch (err) {
      log.error(`${what} not reloaded; the previous ones stay`, { path, err: (err as Error).message });
    }
  };
  process.on('SIGHUP', onHup);
  return () => process.off('SIGHUP', onHup);
}
