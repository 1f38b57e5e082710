/**
 * The security settings of a `raftblock start` cluster: peer TLS, the NBD PSK file, the admin
 * token file and the HTTPS certificate. They are remembered in DIR/cluster.json with the
 * ports, so that running `raftblock start` again on the same DIR without them keeps the
 * cluster as protected as it was: a restart that forgot a flag would otherwise serve the
 * volume in the clear, or open the admin API, without anyone asking for it.
 *
 * A flag given on the command line wins and is remembered; `--no-peer-tls`,
 * `--no-nbd-tls-psk`, `--no-admin-token-file` and `--no-http-tls` turn a remembered setting
 * off. Files are remembered by absolute path and read again at every start (a rotated PSK or
 * token file is taken as it is then).
 */
import { resolve } from 'node:path';

/** What DIR/cluster.json remembers (absent fields: off). */
export interface SecuritySettings {
  peerTls?: boolean;
  /** Absolute path of the PSK file (`username:hexkey` lines). */
  nbdTlsPsk?: string;
  /** Absolute path of the admin token file. */
  adminTokenFile?: string;
  /** Absolute paths of the HTTPS certificate, its key, and the CA the start's own admin calls trust. */
  httpTlsCert?: string;
  httpTlsKey?: string;
  httpTlsCa?: string;
}

/** The flags as commander parses them: absent, a value, or false for `--no-…`. */
export interface SecurityFlags {
  peerTls?: boolean;
  nbdTlsPsk?: string | false;
  adminTokenFile?: string | false;
  httpTlsCert?: string;
  httpTlsKey?: string;
  httpTlsCa?: string;
  /** false: --no-http-tls (all three off); commander sets true when it is not given. */
  httpTls?: boolean;
}

export interface ResolvedSecurity {
  settings: SecuritySettings;
  /** One line per setting taken from cluster.json rather than from the command line. */
  remembered: string[];
}

/** The settings this start runs with: each flag given, else what `previous` remembers. */
export function resolveSecurity(flags: SecurityFlags, previous: SecuritySettings | undefined): ResolvedSecurity {
  const remembered: string[] = [];
  /** The flag when given (false: turned off), else the remembered value, noted. */
  const pick = <T extends string | true>(flag: T | false | undefined, before: T | undefined, name: string, off = `no-${name}`): T | undefined => {
    if (flag === false) return undefined;
    if (flag !== undefined) return flag;
    if (before !== undefined) remembered.push(`--${name}${before === true ? '' : ` ${before}`} (remembered; --${off} turns it off)`);
    return before;
  };
  const absolute = (flag: string | false | undefined): string | false | undefined => (typeof flag === 'string' ? resolve(flag) : flag);
  const peerTls = pick<true>(flags.peerTls === true ? true : flags.peerTls, previous?.peerTls === true ? true : undefined, 'peer-tls');
  const nbdTlsPsk = pick(absolute(flags.nbdTlsPsk), previous?.nbdTlsPsk, 'nbd-tls-psk');
  const adminTokenFile = pick(absolute(flags.adminTokenFile), previous?.adminTokenFile, 'admin-token-file');
  const https = (flag: string | undefined, before: string | undefined, name: string): string | undefined =>
    pick(flags.httpTls === false ? false : absolute(flag), before, name, 'no-http-tls');
  const httpTlsCert = https(flags.httpTlsCert, previous?.httpTlsCert, 'http-tls-cert');
  const httpTlsKey = https(flags.httpTlsKey, previous?.httpTlsKey, 'http-tls-key');
  const httpTlsCa = https(flags.httpTlsCa, previous?.httpTlsCa, 'http-tls-ca');
  return {
    settings: {
      ...(peerTls ? { peerTls } : {}),
      ...(nbdTlsPsk ? { nbdTlsPsk } : {}),
      ...(adminTokenFile ? { adminTokenFile } : {}),
      ...(httpTlsCert ? { httpTlsCert } : {}),
      ...(httpTlsKey ? { httpTlsKey } : {}),
      ...(httpTlsCa ? { httpTlsCa } : {}),
    },
    remembered,
  };
}
