/**
 * Shape checks of Raft messages that arrive from the network, before they reach the core.
 * The core trusts its inputs (it asserts, and a message with a string where a number belongs
 * could corrupt its state before anything throws), and a frame decodes into whatever msgpack
 * says; so a malformed message, or one whose `from` is not the frame's sender (a node speaking
 * for another), is dropped here like any other bad input from a socket.
 */
import type { Message } from '../raft/index.js';

/** Longest membership list a message may carry (far above any real configuration). */
const maxConfMembers = 1024;
/** Most entries one append may carry (the transport bounds frame bytes as well). */
const maxEntriesPerMessage = 65536;

function count(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Absent (a build before the field) or a count. */
function optionalCount(v: unknown): boolean {
  return v === undefined || count(v);
}

function integer(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function nodeList(v: unknown): boolean {
  return Array.isArray(v) && v.length <= maxConfMembers && v.every((id) => count(id) && id > 0);
}

function confState(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const c = v as Record<string, unknown>;
  // Only `voters` is required: a configuration persisted before the other fields existed may
  // lack them, and the core's own messages must never be dropped here.
  const optional = (x: unknown): boolean => x === undefined || nodeList(x);
  return nodeList(c.voters) && optional(c.votersOutgoing) && optional(c.learners) && optional(c.learnersNext) && (c.autoLeave === undefined || typeof c.autoLeave === 'boolean');
}

function entry(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  return count(e.index) && count(e.term) && (e.type === 0 || e.type === 1) && e.data instanceof Uint8Array;
}

/**
 * True when `m` is a well-formed Raft message from node `sender` to node `self`. Everything a
 * message type carries is checked for type and range; values are the core's business.
 */
export function isWellFormedMessage(m: unknown, sender: number, self: number): m is Message {
  if (typeof m !== 'object' || m === null) return false;
  const x = m as Record<string, unknown>;
  if (x.from !== sender || x.to !== self || !count(x.term)) return false;
  const echo = integer(x.seq) && integer(x.tick);
  switch (x.type) {
    case 'app':
      return echo && count(x.index) && count(x.logTerm) && count(x.commit) && Array.isArray(x.entries) && x.entries.length <= maxEntriesPerMessage && x.entries.every(entry);
    case 'appResp':
      return echo && typeof x.reject === 'boolean' && count(x.index) && count(x.rejectHint) && count(x.logTerm) && optionalCount(x.logInstance);
    case 'vote':
    case 'preVote':
      return count(x.index) && count(x.logTerm) && typeof x.transfer === 'boolean';
    case 'voteResp':
    case 'preVoteResp':
      return typeof x.reject === 'boolean';
    case 'heartbeat':
      return echo && count(x.commit);
    case 'heartbeatResp':
      return echo;
    case 'snap': {
      const md = x.metadata as Record<string, unknown> | null;
      return (
        echo &&
        typeof md === 'object' &&
        md !== null &&
        count(md.index) &&
        count(md.term) &&
        confState(md.confState) &&
        count(x.offset) &&
        count(x.totalBytes) &&
        x.chunk instanceof Uint8Array &&
        optionalCount(x.logInstance)
      );
    }
    case 'snapResp':
      return echo && count(x.index) && count(x.offset) && typeof x.reject === 'boolean' && optionalCount(x.logInstance);
    case 'timeoutNow':
      return true;
    default:
      return false;
  }
}
