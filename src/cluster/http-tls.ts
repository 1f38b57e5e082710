/**
 * HTTPS for a node's HTTP port (/metrics, /healthz, the admin API): `--http-tls-cert FILE
 * --http-tls-key FILE` on a node, `--ca-file FILE` (or $RAFTBLOCK_CA_FILE) on the admin
 * commands. With it the admin token and the cluster map cross the network encrypted, and a
 * client that trusts the CA knows it talks to a node of the cluster. Certificates are the
 * operator's (any CA, or one self-signed certificate shared by the nodes, which is then also
 * the CA file); the node re-reads both files on SIGHUP.
 */
import { readSecretFile } from '../common/secret-file.js';
import { createSecureContext } from 'node:tls';
import { InvalidArgument } from '../common/errors.js';

export interface HttpTls {
  /** PEM certificate chain, the node's first. */
  cert: Buffer;
  /** PEM private key of the first certificate. */
  key: Buffer;
}

/** The oldest TLS a node's HTTPS port speaks. */
export const httpTlsMinVersion = 'TLSv1.2';

/** A PEM file, whole (an empty one is refused here; a malformed one by the TLS checks below). */
function readPem(path: string, what: string): Buffer {
  return readSecretFile(path, what, 1);
}

/** Reads and checks a certificate and its key (they parse, and the key is the certificate's). */
export function readHttpTls(certPath: string, keyPath: string): HttpTls {
  const tls = { cert: readPem(certPath, 'HTTPS certificate'), key: readPem(keyPath, 'HTTPS key') };
  try {
    createSecureContext(tls);
  } catch (err) {
    throw new InvalidArgument(`${certPath} and ${keyPath} are not a PEM certificate and its private key: ${(err as Error).message}`);
  }
  return tls;
}

/** Reads the CA file an admin client trusts (PEM, one or more certificates). */
export function readCaFile(path: string): Buffer {
  const ca = readPem(path, 'CA');
  try {
    createSecureContext({ ca });
  } catch (err) {
    throw new InvalidArgument(`${path} is not a PEM certificate file: ${(err as Error).message}`);
  }
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new InvalidArgument(`${path} holds no PEM certificate`);
  return ca;
}

/** Both or neither of --http-tls-cert and --http-tls-key. */
export function httpTlsFromFlags(cert: string | undefined, key: string | undefined): HttpTls | undefined {
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) throw new InvalidArgument('--http-tls-cert and --http-tls-key go together');
  return readHttpTls(cert, key);
}
