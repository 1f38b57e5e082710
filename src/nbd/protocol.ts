/**
 * NBD protocol constants, once, with the names of the NBD specification
 * (NetworkBlockDevice/nbd doc/proto.md). Every wire value used in src/nbd comes from here.
 * Numbers are plain `number`s; 64-bit magics are split into high and low 32-bit halves
 * because the codecs read them as two uint32 (no BigInt on the hot path).
 */

// ---- Handshake magics -------------------------------------------------------------------------

/** 'NBDMAGIC', the first 8 bytes a server sends. */
export const NBDMAGIC_HI = 0x4e42444d;
export const NBDMAGIC_LO = 0x41474943;
/** 'IHAVEOPT', sent by the server after NBDMAGIC and by the client before every option. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** Magic of every option reply (fixed newstyle): 0x0003e889045565a9. */
export const NBD_REP_MAGIC_HI = 0x0003e889;
export const NBD_REP_MAGIC_LO = 0x045565a9;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) ----------------------------

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---- Transmission flags (16 bits) ------------------------------------------------------------

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Option types ----------------------------------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option reply types ----------------------------------------------------------------------

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Error replies have bit 31 set. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

// ---- Info types (NBD_OPT_INFO / NBD_OPT_GO) --------------------------------------------------

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Transmission: requests ------------------------------------------------------------------

export const NBD_REQUEST_MAGIC = 0x25609513;
/** Size of a (compact) request header on the wire. */
export const NBD_REQUEST_HEADER_BYTES = 28;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
/** Highest command type this server knows (for sizing per-command metric tables). */
export const NBD_CMD_MAX = NBD_CMD_BLOCK_STATUS;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Names for logs and metric labels, indexed by command type. */
export const NBD_CMD_NAMES: readonly string[] = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status'];

// ---- Transmission: replies -------------------------------------------------------------------

export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_SIMPLE_REPLY_HEADER_BYTES = 16;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_STRUCTURED_REPLY_HEADER_BYTES = 20;

export const NBD_REPLY_FLAG_DONE = 1 << 0;

export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- Metadata contexts -----------------------------------------------------------------------

export const NBD_META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
/** The id this server gives `base:allocation` when a client selects it. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---- Error values (the only ones the protocol allows on the wire) ----------------------------

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Names for logs and metric labels. */
export function nbdErrnoName(errno: number): string {
  switch (errno) {
    case NBD_EPERM: return 'EPERM';
    case NBD_EIO: return 'EIO';
    case NBD_ENOMEM: return 'ENOMEM';
    case NBD_EINVAL: return 'EINVAL';
    case NBD_ENOSPC: return 'ENOSPC';
    case NBD_EOVERFLOW: return 'EOVERFLOW';
    case NBD_ENOTSUP: return 'ENOTSUP';
    case NBD_ESHUTDOWN: return 'ESHUTDOWN';
    default: return `E${errno}`;
  }
}

// ---- Limits of this server (not from the spec) -----------------------------------------------

/** The spec bounds strings (export names, messages) at 4096 bytes. */
export const maxStringBytes = 4096;
/**
 * Largest option payload this server reads into memory. Larger options are read off the socket
 * and discarded, then answered NBD_REP_ERR_TOO_BIG; they never cause an allocation.
 */
export const maxOptionBytes = 64 * 1024;
/** Largest READ/WRITE payload (advertised as the maximum block size). */
export const maxPayloadBytes = 32 * 1024 * 1024;
/** Cap on the option haggling: a client that sends more options than this is disconnected. */
export const maxOptionsPerHandshake = 1024;
