/**
 * Request ids: (session, sequence) names one request however many times it is proposed, so
 * that a retry after an unknown outcome (a timeout, a lost leader) whose first attempt also
 * committed takes effect once. PG writes carry them (store/ops.ts), and so do map commands
 * (cluster/map.ts MetaCommandId). A session is a process's random number, so a restarted
 * process never reuses the ids of its previous life; its sequence starts at a random point too.
 */
import { randomInt } from 'node:crypto';

/** Sessions are below 2^20 so that session·2^32 + sequence is an exact number. */
export const maxRequestSession = 2 ** 20 - 1;
/** Sequences run in [0, 2^32). */
export const requestSeqLimit = 2 ** 32;

export interface RequestId {
  session: number;
  seq: number;
}

/** The number an id is remembered by: session·2^32 + sequence (never 0 for a real session). */
export function requestKey(session: number, seq: number): number {
  return session * requestSeqLimit + seq;
}

/** This process's ids of one kind: a random session, then consecutive sequences. */
export class RequestIdSource {
  readonly session = randomInt(1, maxRequestSession + 1);
  private seq = randomInt(0, requestSeqLimit);

  /** The next sequence of this session. */
  nextSeq(): number {
    this.seq = (this.seq + 1) % requestSeqLimit;
    return this.seq;
  }

  next(): RequestId {
    return { session: this.session, seq: this.nextSeq() };
  }
}
