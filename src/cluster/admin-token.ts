/**
 * The admin API's bearer token (`--admin-token-file` on a node, `--token-file` on the admin
 * commands): with one set, every /v1 request must carry `Authorization: Bearer TOKEN`;
 * /metrics and /healthz stay open to monitoring. Over plain HTTP the token is only as private
 * as the network: serve HTTPS (http-tls.ts), or bind --http to an address only operators reach.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { InvalidArgument } from '../common/errors.js';
import { readSecretFile } from '../common/secret-file.js';

export const minAdminTokenChars = 16;

/** The token in `path`: printable ASCII without spaces (it travels in a header), ≥ 16 characters. */
export function readAdminToken(path: string): string {
  const text = readSecretFile(path, 'admin token', minAdminTokenChars).toString('latin1');
  if (!/^[\x21-\x7e]+$/.test(text)) throw new InvalidArgument(`${path}: an admin token is printable ASCII without spaces or line breaks`);
  return text;
}

/** Checks Authorization headers against one token, in constant time. */
export class AdminTokenCheck {
  private readonly want: Buffer;

  constructor(token: string) {
    this.want = digest(`Bearer ${token}`);
  }

  allows(authorization: string | undefined): boolean {
    return authorization !== undefined && timingSafeEqual(digest(authorization), this.want);
  }
}

/** Equal-length inputs for timingSafeEqual, whatever the header's length. */
function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'latin1').digest();
}
