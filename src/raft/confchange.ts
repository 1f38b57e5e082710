/**
 * Membership changes: their encoding in a ConfChange entry, and how a change transforms a
 * ConfState (joint consensus: enter with the new voters as the incoming majority and the old
 * voters as the outgoing majority; leave by dropping the outgoing set).
 */
import { assert } from '../common/assert.js';
import { InvalidArgument } from '../common/errors.js';
import { cloneConfState } from './storage.js';
import type { ConfChange, ConfState, NodeId } from './types.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return encoder.encode(JSON.stringify({ changes: cc.changes, autoLeave: cc.autoLeave ?? true }));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const v = JSON.parse(decoder.decode(data)) as ConfChange;
  assert(Array.isArray(v.changes), 'conf change without changes');
  return v;
}

export function isJoint(cs: ConfState): boolean {
  return cs.votersOutgoing.length > 0;
}

/** Every member (voters of both halves and learners), sorted. */
export function allMembers(cs: ConfState): NodeId[] {
  const s = new Set<NodeId>([...cs.voters, ...cs.votersOutgoing, ...cs.learners, ...cs.learnersNext]);
  return [...s].sort((a, b) => a - b);
}

/** Checks a proposed change against the current configuration; throws InvalidArgument. */
export function validateConfChange(cs: ConfState, cc: ConfChange): void {
  if (cc.changes.length === 0) {
    if (!isJoint(cs)) throw new InvalidArgument('not in a joint configuration: nothing to leave');
    return;
  }
  if (isJoint(cs)) throw new InvalidArgument('already in a joint configuration');
  const next = applyConfChange(cs, cc);
  if (next.voters.length === 0) throw new InvalidArgument('a configuration needs at least one voter');
}

/** The configuration after applying `cc` to `cs` (pure). */
export function applyConfChange(cs: ConfState, cc: ConfChange): ConfState {
  const out = cloneConfState(cs);
  if (cc.changes.length === 0) {
    // Leave the joint configuration.
    assert(isJoint(cs), 'leave-joint outside a joint configuration');
    out.votersOutgoing = [];
    const learners = new Set([...out.learners, ...out.learnersNext]);
    out.learners = [...learners].sort((a, b) => a - b);
    out.learnersNext = [];
    out.autoLeave = false;
    return out;
  }
  assert(!isJoint(cs), 'enter-joint inside a joint configuration');
  const outgoing = [...cs.voters];
  const voters = new Set(cs.voters);
  const learners = new Set(cs.learners);
  const learnersNext = new Set<NodeId>();
  for (const ch of cc.changes) {
    assert(Number.isInteger(ch.nodeId) && ch.nodeId > 0, `bad node id ${ch.nodeId}`);
    switch (ch.type) {
      case 'addVoter':
        voters.add(ch.nodeId);
        learners.delete(ch.nodeId);
        learnersNext.delete(ch.nodeId);
        break;
      case 'addLearner':
        voters.delete(ch.nodeId);
        // An outgoing voter cannot be a learner until the joint configuration is left.
        if (outgoing.includes(ch.nodeId)) learnersNext.add(ch.nodeId);
        else learners.add(ch.nodeId);
        break;
      case 'removeNode':
        voters.delete(ch.nodeId);
        learners.delete(ch.nodeId);
        learnersNext.delete(ch.nodeId);
        break;
    }
  }
  out.voters = [...voters].sort((a, b) => a - b);
  out.votersOutgoing = outgoing.sort((a, b) => a - b);
  out.learners = [...learners].sort((a, b) => a - b);
  out.learnersNext = [...learnersNext].sort((a, b) => a - b);
  out.autoLeave = cc.autoLeave ?? true;
  return out;
}
