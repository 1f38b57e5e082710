/**
 * Certificates for the HTTPS tests, made by openssl: a self-signed certificate (its own CA) for
 * the names a test's nodes answer on.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

/** A self-signed P-256 certificate and key in `dir`, named `name`, valid for `altNames` (e.g. IP:127.0.0.1). */
export function selfSignedCert(dir: string, name: string, altNames: string[] = ['IP:127.0.0.1', 'DNS:localhost']): CertFiles {
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', `/CN=${name}`,
      '-addext', `subjectAltName=${altNames.join(',')}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return files;
}
