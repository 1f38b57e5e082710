/**
 * Every error raftblock raises on purpose is a RaftblockError with a stable `code`.
 * Callers branch on `code` (or `instanceof`), never on message text.
 */
export class RaftblockError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An invariant was violated: a bug in raftblock, never bad input. */
export class AssertionFailed extends RaftblockError {
  constructor(message: string) {
    super('ASSERTION_FAILED', message);
  }
}

/** Input from a user, a file or a command line is not acceptable. */
export class InvalidArgument extends RaftblockError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/**
 * A request body is larger than the server takes: it is refused unread (the connection then
 * closes, as the rest of the body is never read off it).
 */
export class PayloadTooLarge extends RaftblockError {
  constructor(message: string) {
    super('PAYLOAD_TOO_LARGE', message);
  }
}

/** A peer on a socket broke the protocol; the connection is closed, nothing else is affected. */
export class ProtocolError extends RaftblockError {
  constructor(message: string) {
    super('PROTOCOL_ERROR', message);
  }
}

/** An operating-system I/O call failed; `errno` is the positive errno value. */
export class IoError extends RaftblockError {
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, message?: string) {
    super('IO_ERROR', message ?? `${syscall} failed: errno ${errno}`);
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** A request addressed bytes outside the device. */
export class OutOfRange extends RaftblockError {
  constructor(message: string) {
    super('OUT_OF_RANGE', message);
  }
}

/** A write to something that is read-only. */
export class ReadOnly extends RaftblockError {
  constructor(message = 'export is read-only') {
    super('READ_ONLY', message);
  }
}

/** No space to hold the write. */
export class NoSpace extends RaftblockError {
  constructor(message: string) {
    super('NO_SPACE', message);
  }
}

/** The operation is not supported by this backend. */
export class NotSupported extends RaftblockError {
  constructor(message: string) {
    super('NOT_SUPPORTED', message);
  }
}

/** Data read back failed its checksum or structure check. */
export class Corruption extends RaftblockError {
  constructor(message: string) {
    super('CORRUPTION', message);
  }
}

/** The request was sent to a node that is not the leader of its group. */
export class NotLeader extends RaftblockError {
  readonly leaderHint: string | undefined;
  constructor(message: string, leaderHint?: string) {
    super('NOT_LEADER', message);
    this.leaderHint = leaderHint;
  }
}

/** The request carried a stale epoch or term and was refused (fencing). */
export class StaleEpoch extends RaftblockError {
  constructor(message: string) {
    super('STALE_EPOCH', message);
  }
}

/** The service is shutting down or a dependency is unavailable; retrying later may work. */
export class Unavailable extends RaftblockError {
  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

/**
 * A PG image pulled in chunks changed at its source between two chunks (the source restored a
 * snapshot, or its store was reopened): the chunks would assemble a mix of two states, so the
 * pull is abandoned and started over from the first chunk.
 */
export class SnapshotSourceChanged extends RaftblockError {
  constructor(message: string) {
    super('SNAPSHOT_SOURCE_CHANGED', message);
  }
}

/** A deadline passed before the operation completed; its outcome is unknown. */
export class TimedOut extends RaftblockError {
  constructor(message: string) {
    super('TIMED_OUT', message);
  }
}

/** The named thing (volume, pool, node) does not exist. */
export class NotFound extends RaftblockError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** The named thing (volume, pool, node) exists already. */
export class AlreadyExists extends RaftblockError {
  constructor(message: string) {
    super('ALREADY_EXISTS', message);
  }
}

/** A server could not listen on its address (in use, not local, not permitted). */
export class AddressUnavailable extends RaftblockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ADDRESS_UNAVAILABLE', message, options);
  }
}

/** A node that is running and reachable is not replaced: replacement is for a lost data dir. */
export class NodeAlive extends RaftblockError {
  constructor(message: string) {
    super('NODE_ALIVE', message);
  }
}

/** A node cannot be removed from the map while it is `in`: it must be marked `out` (drained) first. */
export class NodeStillIn extends RaftblockError {
  constructor(message: string) {
    super('NODE_STILL_IN', message);
  }
}

/**
 * A node cannot be removed from the map while a PG still lists it as a replica (in the map or
 * in its Raft configuration): its data has not moved away yet. `groups` names those PGs.
 */
export class NodeHoldsReplicas extends RaftblockError {
  readonly groups: number[];
  constructor(message: string, groups: number[]) {
    super('NODE_HOLDS_REPLICAS', message);
    this.groups = groups;
  }
}

/** A PG reset was asked for a PG that still has a replica that did not lose its data. */
export class PgNotLost extends RaftblockError {
  constructor(message: string) {
    super('PG_NOT_LOST', message);
  }
}

/**
 * A PG reset was asked for and a node of the map could not be asked what it holds of the PG
 * (down, partitioned away, or it failed to answer): it may still run the PG, so whether every
 * replica lost its data cannot be told. The message names the node.
 */
export class PgLossUnconfirmed extends RaftblockError {
  constructor(message: string) {
    super('PG_LOSS_UNCONFIRMED', message);
  }
}

/** A change to the metadata group's voters (group 0) would leave it without a quorum. */
export class MetaQuorumAtRisk extends RaftblockError {
  constructor(message: string) {
    super('META_QUORUM_AT_RISK', message);
  }
}

/** Rebuilding a PG replica now would leave the PG without a quorum while it runs. */
export class PgQuorumAtRisk extends RaftblockError {
  constructor(message: string) {
    super('PG_QUORUM_AT_RISK', message);
  }
}

/** A replica repair would copy the wrong replica (the PG's leader holds an odd copy), or the copies cannot be told apart. */
export class RepairRefused extends RaftblockError {
  constructor(message: string) {
    super('REPAIR_REFUSED', message);
  }
}

/** This node was removed from the cluster map: it takes part in nothing, and its data dir cannot rejoin. */
export class NodeRemoved extends RaftblockError {
  constructor(message: string) {
    super('NODE_REMOVED', message);
  }
}

/** A peer connection did not prove it holds the cluster's key (or sent no proof at all). */
export class Unauthenticated extends RaftblockError {
  constructor(message: string) {
    super('UNAUTHENTICATED', message);
  }
}

/** An idempotency key came back with another request than the one it was first sent with. */
export class IdempotencyKeyReused extends RaftblockError {
  constructor(message: string) {
    super('IDEMPOTENCY_KEY_REUSED', message);
  }
}

/**
 * A command needs every replica of its PG to run a build that applies it, and one does not yet
 * (a rolling upgrade under way): that node would stop at the command. Upgrade it, then retry.
 */
export class UpgradeRequired extends RaftblockError {
  constructor(message: string) {
    super('UPGRADE_REQUIRED', message);
  }
}

/**
 * A retried PG write came back too late to tell whether its first attempt applied: the PG's
 * dedupe window may have let that attempt's key go, so applying it again could overwrite
 * later writes. Its outcome stays unknown (the client sees EIO, as for a timeout); not retried.
 */
export class RetryWindowPassed extends RaftblockError {
  constructor(message: string) {
    super('RETRY_WINDOW_PASSED', message);
  }
}

/**
 * A proposal was made but did not commit as far as its proposer can tell (a timeout, a lost
 * leadership, the group stopping): it may still commit. Retried like NOT_LEADER (with the
 * leader hint when known), but a retry of it must be deduplicated against this attempt.
 */
export class OutcomeUnknown extends RaftblockError {
  readonly leaderHint: string | undefined;
  constructor(message: string, leaderHint?: string, options?: { cause?: unknown }) {
    super('OUTCOME_UNKNOWN', message, options);
    this.leaderHint = leaderHint;
  }
}
