/**
 * Idempotency keys for the admin API's changes (`Idempotency-Key` header on POST and DELETE).
 *
 * A change whose answer is lost (the connection dropped, the request timed out) has an unknown
 * outcome: group 0 may have applied it. A client that sends the request again with the same
 * key gets the first attempt's answer (a create answered "created", not ALREADY_EXISTS; a
 * delete answered "deleted", not NOT_FOUND), because the key names one map command id
 * (MetaCommandId) and group 0 applies an id once and remembers its answer (meta-store.ts, the
 * last 1024 ids). The id is a hash of the key and the request's method and path, so one key
 * reused on another route is another command. The id also carries a fingerprint of the body
 * (its bytes as sent), which group 0 remembers with the answer: a key sent again with another
 * body on the same route is refused with IDEMPOTENCY_KEY_REUSED (HTTP 422), as the IETF
 * Idempotency-Key draft asks, instead of being told that what it asked for now was done.
 *
 * `raftblock` commands send a fresh key with every change and repeat it on their own retries.
 */
import { createHash } from 'node:crypto';
import { InvalidArgument } from '../common/errors.js';
import { maxRequestSession } from '../common/request-id.js';
import type { MetaCommandId } from './map.js';

/** The HTTP header (lower case, as node:http presents it). */
export const idempotencyKeyHeader = 'idempotency-key';
export const maxIdempotencyKeyChars = 128;

/**
 * The map command id a key names on one route, with the fingerprint of the request's body
 * (empty for a request without one); a malformed key is refused (INVALID_ARGUMENT).
 */
export function commandIdOfKey(key: string, method: string, path: string, body: string | Uint8Array = ''): MetaCommandId {
  if (key.length === 0 || key.length > maxIdempotencyKeyChars || !/^[\x21-\x7e]+$/.test(key)) {
    throw new InvalidArgument(`${idempotencyKeyHeader} must be 1..${maxIdempotencyKeyChars} printable ASCII characters without spaces`);
  }
  const digest = createHash('sha256').update(`${method} ${path}\n${key}`).digest();
  const fingerprint = createHash('sha256').update(body).digest().readUIntBE(0, 6);
  // Sessions start at 1 (0 means "no id" in the dedupe window's keys).
  return { session: 1 + (digest.readUInt32BE(0) % maxRequestSession), seq: digest.readUInt32BE(4), fingerprint };
}
