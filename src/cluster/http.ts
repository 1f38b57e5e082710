/**
 * A node's HTTP server: Prometheus metrics (/metrics), health (/healthz), and the JSON admin
 * API whose contract (paths, bodies, error codes) is in admin-client.ts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { httpTlsMinVersion, type HttpTls } from './http-tls.js';
import type { Registry } from 'prom-client';
import { listenOn, type HostPort } from '../common/address.js';
import { limitHttpServer } from '../common/http-limits.js';
import { InvalidArgument, PayloadTooLarge, RaftblockError, Unauthenticated } from '../common/errors.js';
import { AdminTokenCheck } from './admin-token.js';
import { httpStatusOf, type GroupDigest, type NodeStatus, type RebuildReplicaResponse, type RemoveNodeResponse, type ReplaceNodeResponse } from './admin-client.js';
import type { ClusterMap, MapCommand, MetaCommandId, NodeState, Pool, Volume } from './map.js';
import { commandIdOfKey, idempotencyKeyHeader } from './idempotency-key.js';

export interface AdminSource {
  map(): ClusterMap;
  status(): NodeStatus;
  health(): string | null;
  /**
   * Runs a map command in group 0; resolves once applied, with what it created or changed.
   * `cid` (from an Idempotency-Key) names the command across the client's retries.
   */
  proposeMeta(cmd: MapCommand, cid?: MetaCommandId): Promise<unknown>;
  /** Resizes a volume; a shrink also discards the data past the new end on every replica. */
  resizeVolume(name: string, sizeBytes: number, allowShrink: boolean, cid?: MetaCommandId): Promise<{ epoch: number; volume: Volume }>;
  /** Waits (bounded, best effort) until every reachable node holds a map at least `epoch`. */
  spreadMap(epoch: number): Promise<void>;
  groupDigest(groupId: number): Promise<GroupDigest>;
  /** Rebuilds this node's replica of a PG from the PG's leader (`pool repair`). */
  rebuildReplica(groupId: number, sources: number[] | undefined, cid?: MetaCommandId): Promise<RebuildReplicaResponse>;
  /** Removes a drained node from the map (and from group 0), decided on group 0's leader. */
  removeNode(id: number, cid?: MetaCommandId): Promise<RemoveNodeResponse>;
  /** Starts a PG whose every replica was lost over, empty, decided on group 0's leader. */
  resetPg(pool: string, pg: number, cid?: MetaCommandId): Promise<unknown>;
  /** Marks a node whose data dir was lost as being replaced, decided on group 0's leader. */
  replaceNode(id: number, cid?: MetaCommandId): Promise<ReplaceNodeResponse>;
}

export interface AdminHttp {
  readonly address: HostPort;
  /** Serves HTTPS with a new certificate from now on (a server started with one only). */
  setTls(tls: HttpTls): void;
  close(): Promise<void>;
}

const maxBodyBytes = 64 * 1024;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
}

function sendError(res: ServerResponse, err: unknown): void {
  const e = err instanceof RaftblockError ? err : undefined;
  const code = e?.code ?? (typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : 'INTERNAL');
  const groups = (err as { groups?: unknown })?.groups;
  // The rest of a body too large was left unread: no other request can follow it on this
  // connection, which Node closes once the answer is written.
  if (code === 'PAYLOAD_TOO_LARGE') res.setHeader('connection', 'close');
  sendJson(res, httpStatusOf(code), { error: { code, message: (err as Error)?.message ?? String(err), ...(Array.isArray(groups) ? { groups } : {}) } });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): PayloadTooLarge => new PayloadTooLarge(`request body over the limit of ${maxBodyBytes} bytes`);
    // A declared length over the limit is refused before a byte of the body is read.
    if (Number(req.headers['content-length']) > maxBodyBytes) return reject(tooLarge());
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes > maxBodyBytes) {
        // What comes after is dropped as it arrives, until the 413 is written and the
        // connection closed (sendError): destroying the request here destroyed the socket
        // before the answer could be written, and the client saw a reset instead.
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A name in a request's path, percent-decoded; a malformed escape is the client's mistake. */
function pathSegment(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new InvalidArgument(`path segment ${JSON.stringify(text)} is not valid percent-encoded UTF-8`);
  }
}

export interface AdminHttpOptions {
  /** Every /v1 request must carry it (admin-token.ts); absent: the API is open. */
  adminToken?: string;
  /** Serve HTTPS with this certificate (http-tls.ts); absent: plain HTTP. */
  tls?: HttpTls;
}

export async function startAdminHttp(listen: HostPort, registry: Registry, source: AdminSource, opts: AdminHttpOptions = {}): Promise<AdminHttp> {
  const tokenCheck = opts.adminToken === undefined ? undefined : new AdminTokenCheck(opts.adminToken);
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const url = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    // The body as sent, read once: the route parses it, and an Idempotency-Key's command id
    // carries its fingerprint (whichever asks first).
    let bodyRead: Promise<string> | undefined;
    const bodyText = (): Promise<string> => (bodyRead ??= readBody(req));
    const json = async (): Promise<Record<string, unknown>> => {
      try {
        const body = JSON.parse((await bodyText()) || '{}') as unknown;
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not an object');
        return body as Record<string, unknown>;
      } catch (err) {
        throw err instanceof RaftblockError ? err : new RaftblockError('INVALID_ARGUMENT', `body must be a JSON object: ${(err as Error).message}`);
      }
    };
    // The map command id a client's Idempotency-Key names (idempotency-key.ts); else one per request.
    const commandId = async (): Promise<MetaCommandId | undefined> => {
      const key = req.headers[idempotencyKeyHeader];
      if (key === undefined) return undefined;
      if (typeof key !== 'string') throw new RaftblockError('INVALID_ARGUMENT', `one ${idempotencyKeyHeader} header at most`);
      return commandIdOfKey(key, method, url, await bodyText());
    };
    const changed = async (cmd: MapCommand, status: number, key: 'volume' | 'pool'): Promise<void> => {
      const result = (await source.proposeMeta(cmd, await commandId())) as { epoch: number; changed?: boolean; volume?: Volume; pool?: Pool };
      // A client told "created" may connect to any gateway next: let them all know first.
      await source.spreadMap(result.epoch);
      // 200, not 201, when the command asked for what already was (an identical create).
      const unchanged = result.changed === false;
      sendJson(res, unchanged && status === 201 ? 200 : status, { epoch: result.epoch, [key]: result[key], ...(unchanged ? { changed: false } : {}) });
    };
    const handle = async (): Promise<void> => {
      if (method === 'GET' && url === '/metrics') {
        res.writeHead(200, { 'content-type': registry.contentType }).end(await registry.metrics());
        return;
      }
      if (method === 'GET' && url === '/healthz') {
        const reason = source.health();
        if (reason === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        else res.writeHead(503, { 'content-type': 'text/plain' }).end(reason + '\n');
        return;
      }
      // Everything past monitoring is the admin API.
      if (tokenCheck && !tokenCheck.allows(req.headers.authorization)) {
        return sendError(res, new Unauthenticated('this admin API needs its token: send Authorization: Bearer TOKEN (raftblock commands: --token-file FILE or $RAFTBLOCK_ADMIN_TOKEN_FILE)'));
      }
      if (method === 'GET' && url === '/v1/status') return sendJson(res, 200, source.status());
      if (method === 'GET' && url === '/v1/map') return sendJson(res, 200, source.map());
      if (method === 'GET' && url === '/v1/volumes') return sendJson(res, 200, { epoch: source.map().epoch, volumes: source.map().volumes });
      if (method === 'POST' && url === '/v1/volumes') {
        const b = await json();
        return changed({ type: 'createVolume', name: b.name as string, sizeBytes: b.sizeBytes as number, pool: b.pool as string | undefined, extentBytes: b.extentBytes as number | undefined }, 201, 'volume');
      }
      const resize = /^\/v1\/volumes\/([^/]+)\/resize$/.exec(url);
      if (method === 'POST' && resize) {
        const name = pathSegment(resize[1]);
        const b = await json();
        const result = await source.resizeVolume(name, b.sizeBytes as number, b.allowShrink === true, await commandId());
        return sendJson(res, 200, { epoch: result.epoch, volume: result.volume });
      }
      const vol = /^\/v1\/volumes\/([^/]+)$/.exec(url);
      if (method === 'DELETE' && vol) return changed({ type: 'deleteVolume', name: pathSegment(vol[1]) }, 200, 'volume');
      if (method === 'POST' && url === '/v1/pools') {
        const b = await json();
        return changed({ type: 'createPool', name: b.name as string, replicas: b.replicas as number, pgCount: b.pgCount as number, failureDomain: b.failureDomain as Pool['failureDomain'] }, 201, 'pool');
      }
      const reset = /^\/v1\/pools\/([^/]+)\/pgs\/(\d+)\/reset$/.exec(url);
      if (method === 'POST' && reset) {
        const pool = pathSegment(reset[1]);
        const b = await json();
        if (b.acceptDataLoss !== true) throw new RaftblockError('INVALID_ARGUMENT', 'a PG reset loses whatever the PG held: send {"acceptDataLoss": true}');
        const result = (await source.resetPg(pool, Number(reset[2]), await commandId())) as { epoch: number; pool?: Pool };
        return sendJson(res, 200, { epoch: result.epoch, pool: result.pool });
      }
      const nodeState = /^\/v1\/nodes\/(\d+)\/state$/.exec(url);
      if (method === 'POST' && nodeState) {
        const b = await json();
        const result = (await source.proposeMeta({ type: 'setNodeState', id: Number(nodeState[1]), state: b.state as NodeState }, await commandId())) as { epoch: number };
        return sendJson(res, 200, { epoch: result.epoch });
      }
      const replace = /^\/v1\/nodes\/(\d+)\/replace$/.exec(url);
      if (method === 'POST' && replace) return sendJson(res, 200, await source.replaceNode(Number(replace[1]), await commandId()));
      const nodeId = /^\/v1\/nodes\/(\d+)$/.exec(url);
      if (method === 'DELETE' && nodeId) return sendJson(res, 200, await source.removeNode(Number(nodeId[1]), await commandId()));
      const digest = /^\/v1\/groups\/(\d+)\/digest$/.exec(url);
      if (method === 'GET' && digest) return sendJson(res, 200, await source.groupDigest(Number(digest[1])));
      const rebuild = /^\/v1\/groups\/(\d+)\/rebuild$/.exec(url);
      if (method === 'POST' && rebuild) {
        const b = await json();
        const sources = b.sources;
        if (sources !== undefined && !(Array.isArray(sources) && sources.length <= 64 && sources.every((x) => Number.isSafeInteger(x) && (x as number) > 0))) {
          throw new RaftblockError('INVALID_ARGUMENT', 'sources must be an array of node ids');
        }
        return sendJson(res, 200, await source.rebuildReplica(Number(rebuild[1]), sources as number[] | undefined, await commandId()));
      }
      sendJson(res, 404, { error: { code: 'NOT_FOUND', message: `no route ${method} ${url}` } });
    };
    handle().catch((err) => sendError(res, err));
  };
  const server: Server | HttpsServer = opts.tls ? createHttpsServer({ ...opts.tls, minVersion: httpTlsMinVersion }, serve) : createServer(serve);
  limitHttpServer(server);
  const address = await listenOn(server, listen, opts.tls ? 'HTTPS server (--http)' : 'HTTP server (--http)');
  return {
    address,
    setTls: (tls) => {
      if (!('setSecureContext' in server)) throw new Error('this HTTP port was started without TLS; it cannot take a certificate now');
      server.setSecureContext({ ...tls, minVersion: httpTlsMinVersion });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
