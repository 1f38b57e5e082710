import { createServer, type Server } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { listenOn, type HostPort } from '../common/address.js';
import { limitHttpServer } from '../common/http-limits.js';
import { createLogger } from '../common/log.js';

const log = createLogger('metrics');

/** One registry per process; modules register their metrics on it. */
export function createRegistry(withDefaults = true): Registry {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: 'raftblock_process_' });
  return registry;
}

export interface HealthSource {
  /** Returns null when healthy, else a reason. */
  (): string | null;
}

export interface MetricsServer {
  readonly address: HostPort;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format) and `GET /healthz` (200 "ok" or 503 reason).
 * `extraRoutes` lets a node add JSON endpoints (status) on the same port.
 */
export async function startMetricsServer(
  listen: HostPort,
  registry: Registry,
  health: HealthSource = () => null,
  extraRoutes: Record<string, () => Promise<unknown> | unknown> = {},
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (url === '/metrics') {
      registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text))
        .catch((err) => res.writeHead(500).end(String(err)));
      return;
    }
    if (url === '/healthz') {
      const reason = health();
      if (reason === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(reason + '\n');
      return;
    }
    const route = extraRoutes[url];
    if (route) {
      Promise.resolve()
        .then(() => route())
        .then((body) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)))
        .catch((err) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(err) })));
      return;
    }
    res.writeHead(404).end();
  });
  limitHttpServer(server);
  const address = await listenOn(server, listen, 'metrics server');
  log.info('metrics listening', { address: `${address.host}:${address.port}` });
  return {
    address,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
