/**
 * NBD server metrics on a prom-client registry. Label children are resolved once per command
 * so the hot path does no label lookups; the memory budget's are read from it when scraped.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { FlatHistogram } from '../metrics/flat-histogram.js';
import type { MemoryBudget } from './memory-budget.js';
import { NBD_CMD_MAX, NBD_CMD_NAMES, nbdErrnoName } from './protocol.js';

export class NbdMetrics {
  private readonly requests: Counter<'command'>;
  private readonly errors: Counter<'command' | 'errno'>;
  private readonly latency: FlatHistogram<'command'>;
  readonly bytesRead: Counter;
  readonly bytesWritten: Counter;
  readonly connections: Gauge;
  readonly protocolErrors: Counter;
  readonly connectionsRefused: Counter;
  readonly handshakeTimeouts: Counter;
  private readonly requestsBy: { inc(): void }[] = [];
  private readonly latencyBy: { observe(v: number): void }[] = [];

  constructor(registry: Registry, budget: MemoryBudget) {
    const registers = [registry];
    this.requests = new Counter({ name: 'raftblock_nbd_requests_total', help: 'NBD requests by command', labelNames: ['command'], registers });
    this.errors = new Counter({
      name: 'raftblock_nbd_errors_total',
      help: 'NBD requests answered with an error, by command and errno',
      labelNames: ['command', 'errno'],
      registers,
    });
    this.latency = new FlatHistogram({
      name: 'raftblock_nbd_request_duration_seconds',
      help: 'Time from request parsed to reply queued, by command',
      labelNames: ['command'],
      buckets: [0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    this.bytesRead = new Counter({ name: 'raftblock_nbd_read_bytes_total', help: 'Bytes returned by NBD READ', registers });
    this.bytesWritten = new Counter({ name: 'raftblock_nbd_written_bytes_total', help: 'Bytes accepted by NBD WRITE', registers });
    this.connections = new Gauge({ name: 'raftblock_nbd_connections', help: 'Open NBD connections', registers });
    this.protocolErrors = new Counter({
      name: 'raftblock_nbd_protocol_errors_total',
      help: 'Connections closed because the client broke the protocol',
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'raftblock_nbd_connections_refused_total',
      help: 'Connections closed at once because the server already had its maximum open',
      registers,
    });
    this.handshakeTimeouts = new Counter({
      name: 'raftblock_nbd_handshake_timeouts_total',
      help: 'Connections closed because their handshake did not finish within the handshake limit',
      registers,
    });
    // Read from the budget at each scrape: nothing is added to a request's path.
    new Gauge({
      name: 'raftblock_nbd_memory_budget_bytes',
      help: 'The memory budget: bytes the NBD server holds at most for requests in flight and replies queued, all connections together (a connection holding nothing may go past it by one request)',
      registers,
      collect() {
        this.set(budget.limitBytes);
      },
    });
    new Gauge({
      name: 'raftblock_nbd_memory_budget_held_bytes',
      help: 'Bytes held against the memory budget now: READ and WRITE payloads in flight and READ replies not yet written out',
      registers,
      collect() {
        this.set(budget.usedBytes);
      },
    });
    let waitsSeen = 0;
    new Counter({
      name: 'raftblock_nbd_memory_budget_waits_total',
      help: 'READ and WRITE requests that waited for the memory budget (their connection stopped reading until bytes were freed)',
      registers,
      collect() {
        const waits = budget.waitedCount;
        if (waits > waitsSeen) this.inc(waits - waitsSeen);
        waitsSeen = waits;
      },
    });
    for (let c = 0; c <= NBD_CMD_MAX; c++) {
      this.requestsBy.push(this.requests.labels(NBD_CMD_NAMES[c]));
      this.latencyBy.push(this.latency.labels(NBD_CMD_NAMES[c]));
    }
  }

  private nameOf(type: number): string {
    return type <= NBD_CMD_MAX ? NBD_CMD_NAMES[type] : 'unknown';
  }

  request(type: number, seconds: number): void {
    if (type <= NBD_CMD_MAX) {
      this.requestsBy[type].inc();
      this.latencyBy[type].observe(seconds);
    } else {
      this.requests.labels('unknown').inc();
    }
  }

  error(type: number, errno: number): void {
    this.errors.labels(this.nameOf(type), nbdErrnoName(errno)).inc();
  }
}
