/**
 * Which of a Ready's messages a host may send before the Ready is durable (an optimisation
 * beside the Ready contract in types.ts, which says: persist, then send).
 *
 * A leader's appends, heartbeats and snapshots may leave before its own append is durable:
 * the core counts the leader's own copy of an entry toward a quorum only once a Ready holding
 * it is advanced. But only once the leader's term is durable. A single voter elects itself
 * within one step, so one Ready carries its new term and vote, its no-op and its first
 * appends; sent early, a learner (or a voter being added) can store entries of term T while
 * the leader crashes before T was written, restarts at the old term, wins T again and writes
 * other entries at the same indexes in the same term: two logs that agree on (index, term)
 * and differ, which Raft's log matching rules out. Everything else (votes, acknowledgements)
 * promises what the Ready persists, so it always waits.
 */
import type { Message, Role } from './types.js';

export function leavesBeforePersist(m: Message, role: Role, termDurable: boolean): boolean {
  return role === 'leader' && termDurable && (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap');
}
