/**
 * The seam between the NBD protocol and whatever stores the bytes. `src/nbd` knows nothing of
 * files or Raft: the file export (`src/nbd/file-backend.ts`) and the cluster gateway
 * (`src/gateway`) both implement this.
 *
 * Offsets and lengths are in bytes. The server has already checked every range against
 * `size()` and every flag against the capabilities, so a backend may assert them.
 * Errors are RaftblockError subclasses; the server maps their codes to NBD errnos in one table.
 */
export interface BlockExtent {
  /** Length in bytes of this run. */
  length: number;
  /** True when the run is a hole (unallocated; reads as zeros). */
  hole: boolean;
  /** True when the run is known to read as zeros. */
  zero: boolean;
}

export interface BackendCapabilities {
  readOnly: boolean;
  canTrim: boolean;
  canWriteZeroes: boolean;
  /** WRITE_ZEROES with FAST_ZERO can be honoured (fails fast instead of writing zeros slowly). */
  canFastZero: boolean;
  canCache: boolean;
  /** FLUSH on any connection covers writes completed on every connection. */
  canMultiConn: boolean;
  /** Block status (`base:allocation`) is meaningful. */
  canBlockStatus: boolean;
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

/**
 * Every request method may take a last `signal`: one per client connection, aborted once the
 * connection is gone (its replies can no longer be delivered). A backend that waits or retries
 * (the cluster gateway) may then give up and reject; one that ignores it stays correct. The
 * server passes the same signal object to every request of a connection (no allocation).
 */
export interface BlockBackend {
  readonly capabilities: BackendCapabilities;
  readonly blockSizes: BlockSizes;
  /** Size of the device in bytes. */
  size(): number;
  /**
   * Reads `length` bytes at `offset` into `into` (which is at least `length` long; fill exactly
   * `into[0, length)`, zeros included). Returns the extents covered, in order from `offset`, so
   * the server can send runs with `zero` set as OFFSET_HOLE; a backend that does not know returns
   * `undefined` (the cheapest answer: the whole range is sent as data). `into` is a pooled buffer:
   * do not keep it after the promise settles.
   */
  read(offset: number, length: number, into: Buffer, signal?: AbortSignal): Promise<BlockExtent[] | undefined>;
  /**
   * Writes `data` at `offset`. With `fua` the write is durable when the promise resolves.
   * `data` is a pooled buffer that the server reuses once the promise settles: copy it if it
   * must live longer (a cache, a log queue).
   */
  write(offset: number, data: Buffer, fua: boolean, signal?: AbortSignal): Promise<void>;
  /** Makes every write that completed before this call durable. */
  flush(): Promise<void>;
  /** Deallocates a range (reads afterwards return zeros). */
  trim(offset: number, length: number, fua: boolean, signal?: AbortSignal): Promise<void>;
  /**
   * Zeroes a range. `noHole`: the range must stay allocated. `fastZero`: fail with
   * NotSupported rather than fall back to a slow write of zeros.
   */
  writeZeroes(offset: number, length: number, flags: { fua: boolean; noHole: boolean; fastZero: boolean }, signal?: AbortSignal): Promise<void>;
  /** Hints that the range will be read soon. */
  cache(offset: number, length: number, signal?: AbortSignal): Promise<void>;
  /**
   * Allocation status of the range, covering at least one byte and at most `length` (a client
   * asks again for the rest). `hole` → NBD_STATE_HOLE, `zero` → NBD_STATE_ZERO.
   */
  blockStatus(offset: number, length: number, signal?: AbortSignal): Promise<BlockExtent[]>;
  /** Releases resources; called once when the export shuts down. */
  close(): Promise<void>;
}
