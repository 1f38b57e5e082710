/**
 * Re-reading an NBD server's PSK file on SIGHUP, so users are added or removed without a
 * restart (which would drop every client's connection). A file that no longer parses is
 * logged and the keys in force stay.
 */
import type { Logger } from '../common/log.js';
import { PskKeys } from './tls-psk.js';

/** Installs the handler on `server` (an NbdServer, or a node that owns one); returns its removal. */
export function reloadPskOnSighup(server: { setTlsPsk(keys: PskKeys): void }, path: string, log: Logger): () => void {
  const onHup = (): void => {
    try {
      server.setTlsPsk(PskKeys.fromFile(path));
      log.info('reloaded the NBD TLS keys', { path });
    } catch (err) {
      log.error('NBD TLS keys not reloaded; the previous ones stay', { path, err: (err as Error).message });
    }
  };
  process.on('SIGHUP', onHup);
  return () => process.off('SIGHUP', onHup);
}
