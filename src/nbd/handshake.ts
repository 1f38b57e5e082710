/**
 * The handshake phase (fixed newstyle) as a socket-free state machine: bytes in, replies out.
 * `push(chunk)` consumes client bytes and appends server bytes to `output`; it says whether to
 * keep haggling, enter transmission (with the negotiated parameters and any bytes the client
 * already sent past the handshake), or close. It never throws on client input and never
 * buffers more than one bounded option: an option longer than `maxOptionBytes` is skipped
 * byte by byte as it arrives and answered NBD_REP_ERR_TOO_BIG.
 */
import type { BackendCapabilities, BlockBackend } from './backend.js';
import {
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeServerGreeting,
  CLIENT_FLAGS_BYTES,
  OPTION_HEADER_BYTES,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from './option-codec.js';
import {
  BASE_ALLOCATION_CONTEXT_ID,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_META_CONTEXT_BASE_ALLOCATION,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  maxOptionBytes,
  maxOptionsPerHandshake,
} from './protocol.js';

/** One export as the protocol layer sees it. */
export interface NbdExport {
  backend: BlockBackend;
  description?: string;
}

/** What the handshake negotiated; the transmission phase works from this alone. */
export interface Negotiated {
  exportName: string;
  export: NbdExport;
  structuredReplies: boolean;
  /** `base:allocation` was selected for this export (BLOCK_STATUS allowed). */
  baseAllocation: boolean;
  transmissionFlags: number;
}

export type HandshakeStep =
  | { kind: 'continue' }
  /**
   * NBD_OPT_STARTTLS was acknowledged (the ACK is in `output`): the owner sends it, runs the
   * TLS handshake as the server, calls tlsStarted(), and feeds the decrypted bytes from then
   * on. A client may not send anything between its STARTTLS and our ACK, so bytes that came
   * after the option (`leftover`) are a protocol error.
   */
  | { kind: 'starttls'; leftover: Buffer }
  | { kind: 'transmission'; negotiated: Negotiated; leftover: Buffer }
  | { kind: 'close'; reason: string; protocolError: boolean };

export interface HandshakeOptions {
  exports: ReadonlyMap<string, NbdExport>;
  /** Export served for the empty ("default") name; undefined = the only export, if just one. */
  defaultExport?: string;
  /** True while the server shuts down: options get NBD_REP_ERR_SHUTDOWN. */
  shuttingDown?: () => boolean;
  /**
   * FORCEDTLS (the spec's term): before TLS, every option but NBD_OPT_STARTTLS and
   * NBD_OPT_ABORT is answered NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME ends the session.
   * False: NOTLS, and STARTTLS is refused by policy.
   */
  tlsRequired?: boolean;
}

/** The transmission flags for an export, given whether structured replies were negotiated. */
export function transmissionFlagsFor(caps: BackendCapabilities, structuredReplies: boolean): number {
  let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
  if (caps.readOnly) f |= NBD_FLAG_READ_ONLY;
  else {
    if (caps.canTrim) f |= NBD_FLAG_SEND_TRIM;
    if (caps.canWriteZeroes) {
      f |= NBD_FLAG_SEND_WRITE_ZEROES;
      if (caps.canFastZero) f |= NBD_FLAG_SEND_FAST_ZERO;
    }
  }
  if (caps.canCache) f |= NBD_FLAG_SEND_CACHE;
  if (caps.canMultiConn) f |= NBD_FLAG_CAN_MULTI_CONN;
  if (structuredReplies) f |= NBD_FLAG_SEND_DF;
  return f;
}

export const SERVER_HANDSHAKE_FLAGS = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;

type State = 'client-flags' | 'option-header' | 'option-data' | 'option-skip' | 'done';

export class Handshake {
  /** Bytes for the client, in order; the owner drains it after every push. */
  readonly output: Buffer[] = [];
  private state: State = 'client-flags';
  private pending: Buffer = Buffer.alloc(0);
  private option = 0;
  private optionLength = 0;
  private skipRemaining = 0;
  /** Option payload being accumulated across reads (at most maxOptionBytes). */
  private optionData: Buffer | null = null;
  private optionFilled = 0;
  private optionsSeen = 0;
  private noZeroes = false;
  private structuredReplies = false;
  /** Export for which `base:allocation` was selected, if any. */
  private metaContextExport: string | null = null;
  private tlsActive = false;

  constructor(private readonly opts: HandshakeOptions) {
    this.output.push(encodeServerGreeting(SERVER_HANDSHAKE_FLAGS));
  }

  /** The owner completed the TLS handshake a `starttls` step asked for. */
  tlsStarted(): void {
    this.tlsActive = true;
  }

  /** Consumes client bytes. Once it returns `transmission` or `close`, do not call again. */
  push(chunk: Buffer): HandshakeStep {
    if (this.state === 'done') return { kind: 'close', reason: 'handshake already finished', protocolError: false };
    let data = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = Buffer.alloc(0);
    for (;;) {
      switch (this.state) {
        case 'client-flags': {
          if (data.length < CLIENT_FLAGS_BYTES) return this.keep(data);
          const flags = data.readUInt32BE(0);
          data = data.subarray(CLIENT_FLAGS_BYTES);
          if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
            return this.close(`unknown client flags 0x${flags.toString(16)}`, true);
          }
          // Clients that omit FIXED_NEWSTYLE are served fixed newstyle anyway (spec: MAY).
          this.noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
          this.state = 'option-header';
          break;
        }
        case 'option-header': {
          if (data.length < OPTION_HEADER_BYTES) return this.keep(data);
          const h = parseOptionHeader(data, 0);
          if (!h) return this.close('bad option magic', true);
          data = data.subarray(OPTION_HEADER_BYTES);
          if (++this.optionsSeen > maxOptionsPerHandshake) return this.close('too many options', true);
          this.option = h.option;
          this.optionLength = h.length;
          if (h.length > maxOptionBytes) {
            // Never buffer a hostile length: read it off the socket, then refuse the option.
            // EXPORT_NAME cannot be refused, so a too long one ends the session.
            if (h.option === NBD_OPT_EXPORT_NAME) return this.close('export name too long', true);
            this.skipRemaining = h.length;
            this.state = 'option-skip';
          } else {
            this.state = 'option-data';
          }
          break;
        }
        case 'option-skip': {
          const n = Math.min(this.skipRemaining, data.length);
          this.skipRemaining -= n;
          data = data.subarray(n);
          if (this.skipRemaining > 0) return this.keep(data);
          // A SET_META_CONTEXT refused for its size still replaces the selection (see metaContext).
          if (this.option === NBD_OPT_SET_META_CONTEXT) this.metaContextExport = null;
          this.reply(NBD_REP_ERR_TOO_BIG, `option length ${this.optionLength} exceeds ${maxOptionBytes}`);
          this.state = 'option-header';
          break;
        }
        case 'option-data': {
          let payload: Buffer;
          if (this.optionFilled === 0 && data.length >= this.optionLength) {
            payload = data.subarray(0, this.optionLength); // common case: whole option in one read
            data = data.subarray(this.optionLength);
          } else {
            // Accumulate into one buffer of the option's (bounded) size, so an option trickled
            // in byte by byte costs linear, not quadratic, copying.
            if (data.length === 0) return this.keep(data);
            if (this.optionFilled === 0) this.optionData = Buffer.allocUnsafe(this.optionLength);
            const n = Math.min(this.optionLength - this.optionFilled, data.length);
            data.copy(this.optionData!, this.optionFilled, 0, n);
            this.optionFilled += n;
            data = data.subarray(n);
            if (this.optionFilled < this.optionLength) return this.keep(data);
            payload = this.optionData!;
            this.optionData = null;
            this.optionFilled = 0;
          }
          this.state = 'option-header';
          const step = this.handleOption(this.option, payload);
          if (step.kind === 'transmission') {
            this.state = 'done';
            return { kind: 'transmission', negotiated: step.negotiated, leftover: Buffer.from(data) };
          }
          if (step.kind === 'close') {
            this.state = 'done';
            return step;
          }
          if (step.kind === 'starttls') return { kind: 'starttls', leftover: Buffer.from(data) };
          break;
        }
      }
    }
  }

  private keep(data: Buffer): HandshakeStep {
    // Copy so a large socket chunk is not retained for a few leftover bytes.
    this.pending = data.length === 0 ? Buffer.alloc(0) : Buffer.from(data);
    return { kind: 'continue' };
  }

  private close(reason: string, protocolError: boolean): HandshakeStep {
    this.state = 'done';
    return { kind: 'close', reason, protocolError };
  }

  private reply(replyType: number, payload?: Buffer | string): void {
    const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    this.output.push(encodeOptionReply(this.option, replyType, p));
  }

  private resolve(name: string): NbdExport | undefined {
    if (name === '') {
      const def = this.opts.defaultExport ?? (this.opts.exports.size === 1 ? [...this.opts.exports.keys()][0] : undefined);
      return def === undefined ? undefined : this.opts.exports.get(def);
    }
    return this.opts.exports.get(name);
  }

  private canonicalName(name: string): string {
    if (name !== '') return name;
    return this.opts.defaultExport ?? (this.opts.exports.size === 1 ? [...this.opts.exports.keys()][0] : '');
  }

  private handleOption(option: number, data: Buffer): HandshakeStep {
    const shuttingDown = this.opts.shuttingDown?.() ?? false;
    if (shuttingDown && option !== NBD_OPT_ABORT) {
      if (option === NBD_OPT_EXPORT_NAME) return this.close('server shutting down', false);
      this.reply(NBD_REP_ERR_SHUTDOWN, 'server is shutting down');
      return { kind: 'continue' };
    }
    if (this.opts.tlsRequired && !this.tlsActive && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT) {
      // EXPORT_NAME cannot be answered with an error: the spec has the session end instead.
      if (option === NBD_OPT_EXPORT_NAME) return this.close('NBD_OPT_EXPORT_NAME before TLS on a server that requires TLS', false);
      this.reply(NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
      return { kind: 'continue' };
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(data);
      case NBD_OPT_ABORT:
        this.reply(NBD_REP_ACK);
        return this.close('client aborted the handshake', false);
      case NBD_OPT_LIST:
        if (data.length !== 0) {
          this.reply(NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return { kind: 'continue' };
        }
        for (const [name, e] of this.opts.exports) this.reply(NBD_REP_SERVER, encodeRepServer(name, e.description ?? ''));
        this.reply(NBD_REP_ACK);
        return { kind: 'continue' };
      case NBD_OPT_STARTTLS:
        if (!this.opts.tlsRequired) {
          // NOTLS mode: the spec allows ERR_POLICY or ERR_UNSUP; this server has no TLS by policy.
          this.reply(NBD_REP_ERR_POLICY, 'TLS is not supported by this server');
          return { kind: 'continue' };
        }
        if (this.tlsActive || data.length !== 0) {
          this.reply(NBD_REP_ERR_INVALID, this.tlsActive ? 'TLS is already on' : 'NBD_OPT_STARTTLS takes no data');
          return { kind: 'continue' };
        }
        this.reply(NBD_REP_ACK);
        return { kind: 'starttls', leftover: Buffer.alloc(0) };
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.reply(NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return { kind: 'continue' };
        }
        this.structuredReplies = true;
        this.reply(NBD_REP_ACK);
        return { kind: 'continue' };
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        this.reply(NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return { kind: 'continue' };
    }
  }

  private exportName(data: Buffer): HandshakeStep {
    const name = data.includes(0) ? null : data.toString('utf8');
    const e = name === null ? undefined : this.resolve(name);
    // The spec gives EXPORT_NAME no way to fail except ending the session.
    if (!e || name === null) return this.close(`unknown export ${JSON.stringify(name)}`, false);
    const negotiated = this.negotiate(this.canonicalName(name), e);
    this.output.push(encodeExportNameReply(e.backend.size(), negotiated.transmissionFlags, this.noZeroes));
    return { kind: 'transmission', negotiated, leftover: Buffer.alloc(0) };
  }

  private negotiate(name: string, e: NbdExport): Negotiated {
    return {
      exportName: name,
      export: e,
      structuredReplies: this.structuredReplies,
      baseAllocation: this.structuredReplies && this.metaContextExport === name && e.backend.capabilities.canBlockStatus,
      transmissionFlags: transmissionFlagsFor(e.backend.capabilities, this.structuredReplies),
    };
  }

  private infoOrGo(option: number, data: Buffer): HandshakeStep {
    const req = parseInfoRequest(data);
    if (typeof req === 'string') {
      this.reply(NBD_REP_ERR_INVALID, req);
      return { kind: 'continue' };
    }
    const e = this.resolve(req.exportName);
    if (!e) {
      this.reply(NBD_REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(req.exportName)}`);
      return { kind: 'continue' };
    }
    const name = this.canonicalName(req.exportName);
    const tflags = transmissionFlagsFor(e.backend.capabilities, this.structuredReplies);
    this.reply(NBD_REP_INFO, encodeInfoExport(e.backend.size(), tflags));
    const wanted = new Set(req.infoTypes);
    if (wanted.has(NBD_INFO_NAME)) this.reply(NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, name));
    if (wanted.has(NBD_INFO_DESCRIPTION) && e.description) {
      this.reply(NBD_REP_INFO, encodeInfoString(NBD_INFO_DESCRIPTION, e.description));
    }
    // Always sent: our minimum is 1, so clients that did not ask lose nothing by knowing.
    void NBD_INFO_BLOCK_SIZE;
    const bs = e.backend.blockSizes;
    this.reply(NBD_REP_INFO, encodeInfoBlockSize(bs.minimum, bs.preferred, bs.maximum));
    this.reply(NBD_REP_ACK);
    if (option === NBD_OPT_INFO) return { kind: 'continue' };
    return { kind: 'transmission', negotiated: this.negotiate(name, e), leftover: Buffer.alloc(0) };
  }

  private metaContext(option: number, data: Buffer): HandshakeStep {
    // SET replaces whatever was selected before, "including when this command fails" (the
    // spec): so before any of the checks below can refuse it.
    if (option === NBD_OPT_SET_META_CONTEXT) this.metaContextExport = null;
    if (!this.structuredReplies) {
      this.reply(NBD_REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
      return { kind: 'continue' };
    }
    const req = parseMetaContextRequest(data);
    if (typeof req === 'string') {
      this.reply(NBD_REP_ERR_INVALID, req);
      return { kind: 'continue' };
    }
    const e = this.resolve(req.exportName);
    if (!e) {
      this.reply(NBD_REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(req.exportName)}`);
      return { kind: 'continue' };
    }
    const supported = e.backend.capabilities.canBlockStatus;
    if (option === NBD_OPT_LIST_META_CONTEXT) {
      const all = req.queries.length === 0;
      const match = all || req.queries.some((q) => q === 'base:' || q === NBD_META_CONTEXT_BASE_ALLOCATION);
      if (supported && match) this.reply(NBD_REP_META_CONTEXT, encodeRepMetaContext(0, NBD_META_CONTEXT_BASE_ALLOCATION));
      this.reply(NBD_REP_ACK);
      return { kind: 'continue' };
    }
    // Only the full name selects: the bare namespace ("base:") is a wildcard for LIST, and the
    // spec has SET ignore it.
    if (supported && req.queries.includes(NBD_META_CONTEXT_BASE_ALLOCATION)) {
      this.metaContextExport = this.canonicalName(req.exportName);
      this.reply(NBD_REP_META_CONTEXT, encodeRepMetaContext(BASE_ALLOCATION_CONTEXT_ID, NBD_META_CONTEXT_BASE_ALLOCATION));
    }
    this.reply(NBD_REP_ACK);
    return { kind: 'continue' };
  }
}
